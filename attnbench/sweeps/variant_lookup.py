"""What every sweep asks of a variant spec, answered once per sweep: its name, family and class."""

from __future__ import annotations

from attnbench.core.registry import attention_class, parse_attention_spec
from attnbench.measure.lstm_layer import LSTMLayerKind, is_lstm_layer


class VariantLookup:
    """Each variant's spec parsed once per sweep: ``lookup(spec)`` → (name, family, class)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, str, type]] = {}

    def __call__(self, spec: str) -> tuple[str, str, type]:
        if spec not in self._seen and is_lstm_layer(spec):  # the LSTM layer timed beside attention layers (--layer)
            self._seen[spec] = (spec, LSTMLayerKind.family, LSTMLayerKind)
        if spec not in self._seen:
            name = parse_attention_spec(spec).name
            cls = attention_class(name)
            self._seen[spec] = (name, cls.family, cls)
        return self._seen[spec]
