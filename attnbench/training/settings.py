"""What an accuracy cell is: training settings shared by presets and cells, the cell, its result rows."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from attnbench.core.errors import UserError
from attnbench.tasks import (
    canonical_task_spec,
    task_spec_with,
)
from attnbench.tasks.models import ModelSize
from attnbench.training.loop import TrainConfig, TrainResult


# what a cell is --------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """How a task is trained: shared by presets and cells (a cell is a preset plus variant, seed, device)."""

    seq_len: int | None = None  # sets the task's seq_len option; None keeps the task spec's own
    steps: int
    batch_size: int
    model: ModelSize = field(default_factory=ModelSize)
    lr: float
    weight_decay: float = 0.01
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    eval_interval: int
    val_size: int
    test_size: int
    train_size: int | None = None  # None: fresh examples every step; N: a fixed set of N, reshuffled each epoch
    eval_batch_size: int | None = None  # None = 2 · batch_size
    target_accuracy: float | None = None  # stop once val accuracy reaches it
    time_budget_s: float | None = None  # per cell, training loop only (data generation excluded)


@dataclass(frozen=True, kw_only=True)
class AccuracyPreset(TrainingSettings):
    """Named settings for one task; ``seeds`` is how many seeds a sweep runs with this preset."""

    name: str
    task: str
    seeds: int = 1
    note: str = ""  # why these numbers

    def cell(self, variant: str, *, seed: int = 0, device: str = "cpu", **overrides: Any) -> AccuracyCell:
        """A cell of this preset; ``overrides`` may name any cell field or :class:`ModelSize` field."""
        settings = {f.name: getattr(self, f.name) for f in fields(TrainingSettings)}
        cell = AccuracyCell(task=self.task, variant=variant, seed=seed, device=device, preset=self.name, **settings)
        return cell.with_overrides(**overrides) if overrides else cell


@dataclass(frozen=True, kw_only=True)
class AccuracyCell(TrainingSettings):
    task: str  # task spec, e.g. "mqar:pairs=16"
    variant: str  # attention spec for the self-attention slots
    seed: int = 0
    preset: str = "custom"
    device: str = "cpu"

    def __post_init__(self) -> None:
        for label in ("steps", "batch_size", "eval_interval", "val_size", "test_size"):
            if getattr(self, label) < 1:
                raise UserError(f"accuracy cell: {label} must be >= 1, got {getattr(self, label)}")
        if self.train_size is not None and self.train_size < self.batch_size:
            raise UserError(
                f"accuracy cell: train_size={self.train_size} is smaller than one batch ({self.batch_size})"
            )
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"accuracy cell: device must be cpu or cuda[:N], got {self.device!r}")
        if self.time_budget_s is not None and not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
            raise UserError(f"accuracy cell: time_budget_s must be > 0 seconds and finite, got {self.time_budget_s:g}")
        if not 0 <= self.seed < 2**64:  # torch.manual_seed takes 64-bit seeds
            raise UserError(f"accuracy cell: seed must be in [0, 2**64), got {self.seed}")
        if self.model.num_heads < 1 or self.model.d_model % self.model.num_heads:
            raise UserError(
                f"accuracy cell: d_model={self.model.d_model} is not divisible by heads={self.model.num_heads}; "
                "pick --d-model a multiple of --heads"
            )
        try:  # the training settings fail here, in the parent, rather than as an error row per cell
            self.train_config()
        except ValueError as err:
            raise UserError(f"accuracy cell: {err}") from None

    @property
    def task_spec(self) -> str:
        """The canonical spec of the task this cell trains on, ``seq_len`` included when the cell sets it."""
        return (
            canonical_task_spec(self.task) if self.seq_len is None else task_spec_with(self.task, seq_len=self.seq_len)
        )

    def with_overrides(self, **overrides: Any) -> AccuracyCell:
        """A copy with fields replaced; :class:`ModelSize` fields (d_model, num_layers, ...) are routed to ``model``."""
        return _with_settings(self, overrides, what="accuracy cell setting")

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            steps=self.steps,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
            grad_clip=self.grad_clip,
            eval_interval=self.eval_interval,
            target_accuracy=self.target_accuracy,
            time_budget_s=self.time_budget_s,
            seed=self.seed,
        )


_Settings = TypeVar("_Settings", bound=TrainingSettings)


def _with_settings(base: _Settings, settings: Mapping[str, Any], *, what: str) -> _Settings:
    """``base`` with ``settings`` replaced; :class:`ModelSize` fields go to ``base.model``."""
    own_fields = {f.name for f in fields(base)}
    model_fields = {f.name for f in fields(ModelSize)}
    unknown = sorted(set(settings) - own_fields - model_fields)
    if unknown:
        raise UserError(
            f"unknown {what}(s) {', '.join(unknown)}; settings: {', '.join(sorted(own_fields | model_fields))}"
        )
    model_changes = {k: v for k, v in settings.items() if k in model_fields and k not in own_fields}
    own_changes = {k: v for k, v in settings.items() if k in own_fields}
    model = replace(own_changes.pop("model", base.model), **model_changes)
    return replace(base, model=model, **own_changes)


@dataclass
class AccuracyCellResult:
    row: dict[str, Any]  # ACCURACY_COLUMNS
    curve: list[dict[str, Any]]  # CURVES_COLUMNS
    by_distance: list[dict[str, Any]]  # BY_DISTANCE_COLUMNS
    wall_time_s: float  # the whole cell: data, model, training, testing
    data_time_s: float  # generating or reading the splits
    train: TrainResult | None = None
