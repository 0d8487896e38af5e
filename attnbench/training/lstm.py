"""The LSTM baseline's models: the recurrence attention was introduced to replace, at the skeleton's size.

Same width and depth as the transformer it is compared with: ``num_layers`` LSTM layers of ``d_model`` units
(the classifier's are bidirectional, ``d_model / 2`` units each way, concatenated back to ``d_model``), the
same token embedding scale, a final LayerNorm and the same heads (tied for the LM). No positions: the
recurrence orders the tokens itself. Parameters per layer are 8·d² (four gates over input and hidden state)
against the transformer layer's 12·d² with a 4·d FFN, so the LSTM is not the larger model.

The step count is the point of the comparison: an LSTM layer needs n sequential steps over a sequence, an
attention layer one (see :func:`~attnbench.training.baselines.sequential_steps`).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnbench.core.positional import embedding_scale


class _Embedding(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=d_model**-0.5)
        self.scale = embedding_scale(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.dropout(self.embedding(tokens) * self.scale)  # (B, N, d_model)


class LSTMLanguageModel(nn.Module):
    """Next-token logits from a unidirectional LSTM stack: position t has read tokens ≤ t only."""

    def __init__(self, *, vocab_size: int, d_model: int, num_layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = _Embedding(vocab_size, d_model, dropout)
        self.lstm = nn.LSTM(d_model, d_model, num_layers=num_layers, batch_first=True, dropout=dropout)
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.embed.embedding.weight

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` (B, N) → logits (B, N, vocab)."""
        hidden, _ = self.lstm(self.embed(tokens))  # (B, N, d_model)
        return self.head(self.final_norm(hidden))


class LSTMClassifier(nn.Module):
    """Class logits from a bidirectional LSTM stack, mean-pooled over the real tokens.

    Padding (``pad_id``) is expected at the end of a row, as every task pads; the rows are packed so that
    neither direction reads a pad.
    """

    def __init__(
        self, *, vocab_size: int, d_model: int, num_layers: int, num_classes: int, pad_id: int | None, dropout: float
    ) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"the lstm classifier splits d_model between two directions: d_model={d_model} is odd")
        self.pad_id = pad_id
        self.embed = _Embedding(vocab_size, d_model, dropout)
        self.lstm = nn.LSTM(
            d_model, d_model // 2, num_layers=num_layers, batch_first=True, dropout=dropout, bidirectional=True
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` (B, N) → class logits (B, num_classes)."""
        x = self.embed(tokens)  # (B, N, d_model)
        if self.pad_id is None:
            hidden, _ = self.lstm(x)
            pooled = hidden.mean(dim=1)
        else:
            lengths = (tokens != self.pad_id).sum(dim=1).clamp_min(1)  # an all-pad row reads one pad
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            hidden, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=tokens.shape[1])
            pooled = hidden.sum(dim=1) / lengths[:, None].to(hidden.dtype)  # padded slots come back as zeros
        return self.head(self.final_norm(pooled))
