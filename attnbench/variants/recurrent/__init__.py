"""Gated and delta-rule linear recurrences: ``retnet``, ``gla``, ``deltanet``, ``gated-deltanet``, ``mamba2``.

Each has a chunked parallel form (``forward``, O(n) time and memory forward and backward), a naive
token-by-token reference (``reference``) and a fixed-size decoding ``step``. Importing the package
registers them.
"""

from attnbench.variants.recurrent.base import (
    DeltaRuleAttention,
    GatedRecurrentAttention,
    RecurrenceInputs,
    RecurrentAttention,
)
from attnbench.variants.recurrent.deltanet import DeltaNetAttention, GatedDeltaNetAttention
from attnbench.variants.recurrent.gla import GLAAttention
from attnbench.variants.recurrent.mamba2 import Mamba2Attention
from attnbench.variants.recurrent.retnet import RetNetAttention

__all__ = [
    "DeltaNetAttention",
    "DeltaRuleAttention",
    "GLAAttention",
    "GatedDeltaNetAttention",
    "GatedRecurrentAttention",
    "Mamba2Attention",
    "RecurrenceInputs",
    "RecurrentAttention",
    "RetNetAttention",
]
