"""The LSTM layer that ``--layer`` times beside the attention layers (spec ``lstm``, scope ``layer``).

It is not an :class:`~attnbench.core.attention.Attention`, so the sweep asks this module, not the registry,
for its name, family, FLOPs and workload. Width is the attention layer's ``heads · head_dim``; one
unidirectional layer with the skeleton's pre-LN residual (:class:`LSTMLayer`), timed in every mode (it is
causal by construction) and on every pass. (The LSTM baseline's trained models are in
:mod:`attnbench.training.lstm`; ``measure`` imports only ``core``.)
"""

from __future__ import annotations

from torch import Tensor, nn

from attnbench.core.baseline import LSTM_BASELINE, RECURRENT_BASELINE_FAMILY
from attnbench.measure.cells import CellSpec

LSTM_GATES = 4


def is_lstm_layer(spec: str) -> bool:
    return spec == LSTM_BASELINE


class LSTMLayer(nn.Module):
    """One LSTM layer of width ``d_model`` with the skeleton layer's pre-LN residual."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.lstm = nn.LSTM(d_model, d_model, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.lstm(self.norm(x))[0]  # (B, N, d_model)


class LSTMLayerKind:
    """Stands in for an attention class where the sweep asks one: the name, family and what it cannot run."""

    family = RECURRENT_BASELINE_FAMILY
    exact = True

    @classmethod
    def unsupported_reason(cls, *, device: str, backward: bool, causal: bool) -> str | None:
        return None  # torch's LSTM runs on every device, both passes; it is causal whatever the mode


def lstm_layer_flops(cell: CellSpec) -> int:
    """Matmul FLOPs of one call: four gates over the input and the hidden state, per token (×3 with backward)."""
    d = cell.heads * cell.head_dim
    forward = 2 * cell.batch * cell.seq_len * LSTM_GATES * (d * d + d * d)
    return forward * (3 if cell.backward else 1)


def lstm_layer_peak(cell: CellSpec, element_size: int) -> int:
    """Bytes beyond the input: per token the gates (4d), cell and hidden states (2d), norm and output (2d)."""
    d = cell.heads * cell.head_dim
    activations = cell.batch * cell.seq_len * (LSTM_GATES + 4) * d * element_size
    return activations * (2 if cell.backward else 1)
