"""Model baselines: what the attention variants are compared with that is not an attention (today: ``lstm``).

A baseline trains in an accuracy cell like a variant: its name stands where a variant spec would (``spec``
and ``variant`` columns), its family is ``recurrent-baseline``, and ``--baseline NAME`` (or a suite's
``baselines = [...]``) adds it to a task's cells. It builds the model for a task from the cell's
:class:`~attnbench.tasks.models.ModelSize`, so width, depth and training budget are the variants'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from attnbench.core.baseline import LSTM_BASELINE, RECURRENT_BASELINE_FAMILY
from attnbench.core.errors import UserError
from attnbench.core.registry import attention_class, canonical_spec, parse_attention_spec
from attnbench.tasks.base import ModelKind, Task
from attnbench.tasks.models import ModelSize
from attnbench.training.lstm import LSTMClassifier, LSTMLanguageModel

BASELINE_FAMILY = RECURRENT_BASELINE_FAMILY


def _lstm_lm(task: Task, size: ModelSize) -> nn.Module:
    return LSTMLanguageModel(
        vocab_size=task.vocab_size, d_model=size.d_model, num_layers=size.num_layers, dropout=size.dropout
    )


def _lstm_classifier(task: Task, size: ModelSize) -> nn.Module:
    if task.num_classes is None:
        raise ValueError(f"task {task.describe()!r} runs on the classifier but sets no num_classes")
    return LSTMClassifier(
        vocab_size=task.vocab_size, d_model=size.d_model, num_layers=size.num_layers,
        num_classes=task.num_classes, pad_id=task.pad_id, dropout=size.dropout,
    )  # fmt: skip


@dataclass(frozen=True)
class ModelBaseline:
    name: str
    builders: dict[ModelKind, Callable[[Task, ModelSize], nn.Module]]
    family: str = BASELINE_FAMILY

    def unsupported_reason(self, kind: ModelKind) -> str | None:
        if kind in self.builders:
            return None
        return f"the {self.name} baseline builds {' and '.join(self.builders)} models only, not {kind}"

    def build(self, task: Task, size: ModelSize) -> nn.Module:
        reason = self.unsupported_reason(task.model_kind)
        if reason is not None:
            raise ValueError(reason)
        return self.builders[task.model_kind](task, size)

    def describe(self, size: ModelSize) -> str:
        """The ``model`` column: e.g. ``lstm-d64-l2``."""
        dropout = f"-drop{size.dropout:g}" if size.dropout else ""
        return f"{self.name}-d{size.d_model}-l{size.num_layers}{dropout}"


BASELINES: dict[str, ModelBaseline] = {
    LSTM_BASELINE: ModelBaseline(LSTM_BASELINE, {"lm": _lstm_lm, "classifier": _lstm_classifier}),
}


def is_baseline(spec: str) -> bool:
    return spec in BASELINES


def get_baseline(name: str) -> ModelBaseline:
    if name not in BASELINES:
        raise UserError(f"unknown baseline {name!r}; baselines: {', '.join(BASELINES)}")
    return BASELINES[name]


def canonical_model_spec(spec: str) -> str:
    """A baseline's name as it is, or an attention spec made canonical (an unknown one fails, naming it)."""
    return spec if is_baseline(spec) else canonical_spec(spec)


def model_name_and_family(spec: str) -> tuple[str, str]:
    """The ``variant`` and ``family`` columns of a row trained with ``spec``."""
    if is_baseline(spec):
        return spec, BASELINES[spec].family
    name = parse_attention_spec(spec).name
    return name, attention_class(name).family
