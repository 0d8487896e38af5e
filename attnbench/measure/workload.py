"""Build one cell's workload: the attention (or a whole layer) and a zero-argument call of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from attnbench.core.attention import Attention
from attnbench.core.registry import create_attention
from attnbench.core.skeleton import EncoderLayer, TransformerConfig
from attnbench.measure.cells import CellSpec
from attnbench.measure.lstm_layer import LSTMLayer, is_lstm_layer
from attnbench.measure.output_check import check_output

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_attention(cell: CellSpec) -> Attention:
    return create_attention(cell.spec, head_dim=cell.head_dim, num_heads=cell.heads)


def layer_config(cell: CellSpec) -> TransformerConfig:
    return TransformerConfig(
        vocab_size=1, d_model=cell.heads * cell.head_dim, num_heads=cell.heads, num_layers=1, dropout=0.0
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_workload(cell: CellSpec, seq_len: int | None = None) -> Callable[[], None]:
    """A zero-argument function running one forward (under inference_mode) or one forward+backward.

    Its first call checks the output (:func:`check_output`): a wrong result raises instead of being timed.
    """
    n = cell.seq_len if seq_len is None else seq_len
    device = torch.device(cell.device)
    dtype = DTYPES[cell.dtype]
    gen = torch.Generator(device="cpu").manual_seed(cell.seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_(cell.backward)

    if is_lstm_layer(cell.spec):
        module: torch.nn.Module = LSTMLayer(cell.heads * cell.head_dim).to(device=device, dtype=dtype)
        inputs = [randn(cell.batch, n, cell.heads * cell.head_dim)]
        call_kwargs: dict[str, Any] = {}
    elif cell.scope == "attention":
        attention = build_attention(cell).to(device=device, dtype=dtype)
        module = attention
        inputs = [randn(cell.batch, cell.heads, n, cell.head_dim) for _ in range(3)]
        call_kwargs = {"causal": cell.causal}
    else:
        attention = build_attention(cell).to(device=device, dtype=dtype)
        module = EncoderLayer(layer_config(cell), attention, rotary=None).to(device=device, dtype=dtype)
        inputs = [randn(cell.batch, n, cell.heads * cell.head_dim)]
        call_kwargs = {"causal": cell.causal}
    runner = torch.compile(module) if cell.compile else module
    wrt = [*inputs, *(p for p in module.parameters() if p.requires_grad)] if cell.backward else []
    expected = tuple(inputs[0].shape)  # the output has its query's shape: (B, H, N, D) or (B, N, d_model)
    unchecked = [True]

    def check_first(out: Any) -> None:
        if unchecked[0]:
            check_output(out, shape=expected, dtype=dtype)
            unchecked[0] = False

    def forward() -> None:
        with torch.inference_mode():
            check_first(runner(*inputs, **call_kwargs))
        synchronize(device)

    def forward_backward() -> None:
        out = runner(*inputs, **call_kwargs)
        check_first(out)
        torch.autograd.grad(out, wrt, torch.ones_like(out))
        synchronize(device)

    return forward_backward if cell.backward else forward


