"""Analytic figures of a cell, from the variant's own model: FLOPs, predicted peak bytes, input bytes.

They are computed in the parent (no call runs): the sweep skips a cell predicted over the memory budget.
That runs the variant's own code (its constructor, ``flops()``, ``predicted_peak_bytes()``) in the parent,
so :func:`cell_cost` turns any failure of it into a :class:`VariantCodeError` naming the call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from attnbench.core.attention import Attention
from attnbench.measure.cells import CellSpec
from attnbench.measure.lstm_layer import is_lstm_layer, lstm_layer_flops, lstm_layer_peak
from attnbench.measure.workload import DTYPES, build_attention, layer_config

T = TypeVar("T")


class VariantCodeError(Exception):
    """The variant's own code failed in the parent (a plugin's constructor, flops(), ...): that cell's error."""


def guarded(what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except Exception as err:  # the variant's code, not ours: its failure is its cell's row, not the sweep's end
        raise VariantCodeError(f"{what} raised {type(err).__name__}: {err}"[:500]) from err


@dataclass(frozen=True)
class CellCost:
    flops: int
    predicted_peak_bytes: int | None
    input_bytes: int


def cell_cost(cell: CellSpec) -> CellCost:
    """All three figures from one instance of the variant; raises :class:`VariantCodeError` if its code fails."""
    if is_lstm_layer(cell.spec):
        element = DTYPES[cell.dtype].itemsize
        return CellCost(lstm_layer_flops(cell), lstm_layer_peak(cell, element), input_bytes(cell))
    attention = guarded(f"{cell.spec}: the constructor", lambda: build_attention(cell))
    flops = guarded(f"{cell.spec}: flops()", lambda: cell_flops(cell, attention))
    peak = guarded(f"{cell.spec}: predicted_peak_bytes()", lambda: predicted_peak(cell, attention))
    return CellCost(flops, peak, input_bytes(cell))


def cell_flops(cell: CellSpec, attention: Attention | None = None) -> int:
    if is_lstm_layer(cell.spec):
        return lstm_layer_flops(cell)
    attention = build_attention(cell) if attention is None else attention
    forward = attention.flops(batch=cell.batch, seq_q=cell.seq_len, seq_k=cell.seq_len, causal=cell.causal)
    if cell.scope == "layer":
        config = layer_config(cell)
        tokens = cell.batch * cell.seq_len
        d = config.d_model
        forward += 2 * tokens * (4 * d * d + 2 * d * config.ffn_dim)  # Q/K/V/O projections and the two FFN matmuls
    factor = 1.0 + attention.backward_flops_factor if cell.backward else 1.0
    return int(forward * factor)


def predicted_peak(cell: CellSpec, attention: Attention | None = None) -> int | None:
    """Analytic bytes of one call beyond its inputs (None when the variant has no model)."""
    if is_lstm_layer(cell.spec):
        return lstm_layer_peak(cell, DTYPES[cell.dtype].itemsize)
    attention = build_attention(cell) if attention is None else attention
    element = DTYPES[cell.dtype].itemsize
    predicted = attention.predicted_peak_bytes(
        batch=cell.batch, seq_q=cell.seq_len, seq_k=cell.seq_len, causal=cell.causal,
        backward=cell.backward, element_size=element,
    )  # fmt: skip
    if predicted is None:
        return None
    if cell.scope == "layer":
        config = layer_config(cell)
        tokens = cell.batch * cell.seq_len
        activations = tokens * (10 * config.d_model + 2 * config.ffn_dim) * element
        predicted += activations * (2 if cell.backward else 1)
    return int(predicted)


def input_bytes(cell: CellSpec) -> int:
    element = DTYPES[cell.dtype].itemsize
    per_tensor = cell.batch * cell.seq_len * cell.heads * cell.head_dim * element
    count = 3 if cell.scope == "attention" else 1
    return per_tensor * count * (2 if cell.backward else 1)


