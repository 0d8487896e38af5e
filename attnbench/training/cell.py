"""The accuracy benchmark's cell: train one attention variant on one task with one seed, return result rows.

A cell (:class:`AccuracyCell`) is plain data, so a worker pool — or a cluster — can run it anywhere;
:func:`run_accuracy_cell` returns the ``accuracy.csv`` row, the ``curves.csv`` rows and the
``accuracy_by_distance.csv`` rows (DESIGN.md's columns). Named presets (:data:`PRESETS`, preset → task →
settings) give each task a size for a 2-core CPU (``quick``, one seed), ListOps at n = 512 within three
minutes (``quick-512``), twice the steps with three seeds (``standard``) and LRA's published ListOps
configuration (``lra``).

A task without a built-in preset (a plugin's) brings its own through its class attribute
:attr:`Task.presets <attnbench.tasks.Task.presets>`, e.g.
``presets = {"quick": {"steps": 300, "seq_len": 64, "d_model": 32}}``: each preset's settings (any
:class:`TrainingSettings` or :class:`ModelSize` field, plus ``seeds``) go on top of generic defaults for a
small model on a CPU. Without settings of its own a task still gets ``quick`` (those defaults, the task's
own default ``seq_len``) and ``standard`` (derived from its ``quick`` as the built-in ones are).

The quick models are small enough that one torch thread is as fast as two on a quiet machine, and on a busy
one two threads were up to ~25× slower per step (threads wait on each other): run cells with one thread.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the cell; on CPU, the growth of the
process's peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``) during the cell — exact when the cell
runs in a fresh worker process, and a lower bound (0 when an earlier cell peaked higher) in a reused one.
"""

from __future__ import annotations

import functools
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import torch
from torch import nn

from attnbench.core.errors import UserError
from attnbench.core.registry import attention_class, parse_attention_spec
from attnbench.core.skeleton import resolve_cross_spec
from attnbench.runs.schema import ACCURACY_COLUMNS
from attnbench.tasks import (
    Split,
    Task,
    TaskData,
    canonical_task_spec,
    create_task,
    majority_accuracy,
    task_class,
    task_spec_with,
)
from attnbench.tasks.models import ModelSize, Scores, build_model, logits_of, loss_of, score
from attnbench.training.loop import Evaluation, StepInfo, TrainConfig, TrainResult, train

TRAIN_CHUNK_BATCHES = 32  # a streamed train split is generated this many batches at a time


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
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise UserError(f"accuracy cell: time_budget_s must be > 0 seconds, got {self.time_budget_s:g}")
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


# presets ---------------------------------------------------------------------------------------------------
# 2 pre-LN layers of width 64 with 2 heads. Sinusoidal positions: in our runs rotary made the MQAR plateau
# (≈ 1 / pairs accuracy, before the induction circuit forms) last several times longer for some seeds.
_QUICK_MODEL = ModelSize(d_model=64, num_heads=2, num_layers=2, norm_first=True, positional="sinusoidal")
# ListOps is the other way round: with sinusoidal positions the CLS slot stayed at the majority rate for
# 100 steps where rotary reached ~0.3 (the answer leans on the first operator, a fixed offset from CLS).
_LISTOPS_MODEL = replace(_QUICK_MODEL, num_heads=4, positional="rotary")

PRESETS: dict[str, dict[str, AccuracyPreset]] = {
    "quick": {
        "mqar": AccuracyPreset(
            name="quick",
            task="mqar:pairs=4,vocab=32",
            seq_len=32,
            steps=700,
            batch_size=64,
            model=_QUICK_MODEL,
            lr=3e-3,
            warmup_steps=50,
            eval_interval=25,
            val_size=256,
            test_size=1024,
            target_accuracy=0.99,
            time_budget_s=150.0,
            note="softmax escapes the 1/pairs plateau after 325-450 steps at batch 64 (seeds 0-3) and stops "
            "early at 99 % val (~12 s); variants that never do run all 700 steps (30-60 s on one core)",
        ),
        "listops": AccuracyPreset(
            name="quick",
            task="listops",
            seq_len=256,
            steps=100,
            batch_size=32,
            model=_LISTOPS_MODEL,
            lr=3e-3,
            warmup_steps=10,
            eval_interval=25,
            val_size=256,
            test_size=512,
            train_size=2048,
            time_budget_s=150.0,
            note="n = 256 (trees of 65-255 tokens) so a cell takes ~30-40 s on 2 CPU cores; softmax reaches "
            "~0.3 test accuracy against a ~0.17 majority rate. `quick-512` is the same at n = 512 (≤ 3 min)",
        ),
        "induction": AccuracyPreset(
            name="quick",
            task="induction:vocab=16",
            seq_len=32,
            steps=1500,
            batch_size=64,
            model=_QUICK_MODEL,
            lr=3e-3,
            warmup_steps=50,
            eval_interval=50,
            val_size=512,
            test_size=1024,
            target_accuracy=0.99,
            time_budget_s=150.0,
        ),
        "selective-copy": AccuracyPreset(
            name="quick",
            task="selective-copy:tokens=8,vocab=16",
            seq_len=64,
            steps=800,
            batch_size=32,
            model=_QUICK_MODEL,
            lr=3e-3,
            warmup_steps=50,
            eval_interval=50,
            val_size=256,
            test_size=512,
            target_accuracy=0.99,
            time_budget_s=150.0,
        ),
    },
    "lra": {
        "listops": AccuracyPreset(
            name="lra",
            task="listops",
            seeds=3,
            seq_len=2000,
            steps=5000,
            batch_size=32,
            model=ModelSize(
                d_model=512, num_heads=8, num_layers=6, d_ff=2048, dropout=0.1, norm_first=True, positional="sinusoidal"
            ),
            lr=0.05 / math.sqrt(1000),  # LRA's rsqrt schedule peaks at 0.05 / sqrt(warmup)
            weight_decay=0.1,
            warmup_steps=1000,
            eval_interval=250,
            val_size=2000,
            test_size=2000,
            train_size=96_000,
            note="LRA's published ListOps config (batch 32, 5k steps, 6 × 512, mlp 2048, 8 heads, max_length 2000, "
            "wd 0.1, warm-up 1000, CLS pooling); cosine replaces LRA's rsqrt decay",
        ),
    },
}
PRESETS["quick-512"] = {
    "listops": replace(
        PRESETS["quick"]["listops"],
        name="quick-512",
        seq_len=512,
        steps=150,
        train_size=4096,
        time_budget_s=160.0,
        note="issue 6's quality bar at n ≈ 512 (trees of 129-511 tokens) within 3 minutes on 2 CPU cores",
    )
}


def _standard(quick: AccuracyPreset) -> AccuracyPreset:
    return replace(
        quick,
        name="standard",
        seeds=3,
        steps=2 * quick.steps,
        time_budget_s=None if quick.time_budget_s is None else 4 * quick.time_budget_s,
        test_size=2 * quick.test_size,
    )


PRESETS["standard"] = {name: _standard(preset) for name, preset in (PRESETS["quick"] | PRESETS["quick-512"]).items()}

# A task without built-in presets starts from these; seq_len None keeps the task's own default length.
_TASK_DEFAULTS = AccuracyPreset(
    name="quick",
    task="",
    steps=300,
    batch_size=32,
    model=_QUICK_MODEL,
    lr=1e-3,
    warmup_steps=30,
    eval_interval=25,
    val_size=256,
    test_size=512,
    time_budget_s=150.0,
    note="generic defaults for a task that brings no presets of its own (Task.presets)",
)


def get_preset(task: str, preset: str = "quick") -> AccuracyPreset:
    """The preset named ``preset`` for the task named (or spec'd) by ``task``.

    Built-in presets (:data:`PRESETS`) come first, then the task class's own ``Task.presets[preset]`` over
    generic defaults; a task with neither still gets ``quick`` (the defaults) and ``standard`` (from its quick).
    """
    name = task.partition(":")[0]
    own = task_class(name).presets
    if preset not in PRESETS and preset not in own:
        names = ", ".join(sorted(set(PRESETS) | set(own)))
        raise UserError(f"unknown accuracy preset {preset!r}; presets: {names}")
    by_task = PRESETS.get(preset, {})
    if name in by_task:
        return by_task[name]
    if preset in own:
        base = replace(_TASK_DEFAULTS, name=preset, task=name, note=f"{name}'s own {preset!r} preset")
        return _with_settings(base, own[preset], what=f"{name} preset {preset!r} setting")
    if preset == "quick":
        return replace(_TASK_DEFAULTS, task=name)
    if preset == "standard":
        return _standard(get_preset(name, "quick"))
    covered = ", ".join(sorted(by_task))
    raise UserError(
        f"preset {preset!r} has no settings for task {name!r}; it covers {covered} "
        f"(a task adds its own through Task.presets[{preset!r}])"
    )


# running a cell --------------------------------------------------------------------------------------------
def run_accuracy_cell(cell: AccuracyCell, on_step: Callable[[StepInfo], None] | None = None) -> AccuracyCellResult:
    """Train and test one cell. Failures become a row's status (oom, error, skipped); bad specs raise UserError."""
    cell_start = time.perf_counter()
    task_spec = cell.task_spec
    task = create_task(task_spec)
    variant = parse_attention_spec(cell.variant)
    variant_cls = attention_class(variant.name)
    row: dict[str, Any] = dict.fromkeys(ACCURACY_COLUMNS)
    row.update(
        task=task_spec_with(task_spec, seq_len=None),
        spec=variant.canonical,
        variant=variant.name,
        family=variant_cls.family,
        cross_variant=_cross_variant(task, variant.canonical),
        seed=cell.seed,
        seq_len=task.seq_len,
        model=cell.model.describe(),
        steps=0,
        message="",
    )
    result = AccuracyCellResult(row=row, curve=[], by_distance=[], wall_time_s=0.0, data_time_s=0.0)
    if task.model_kind in ("lm", "seq2seq") and not variant_cls.supports_causal:
        row.update(status="skipped", message=f"{variant.name} has no causal mode; {task.spec} needs one")
        result.wall_time_s = time.perf_counter() - cell_start
        return result

    device = torch.device(cell.device)
    memory = _PeakMemory(device)
    try:
        data_start = time.perf_counter()
        val = _split(task_spec, "val", cell.val_size, cell.seed).to(device)
        test = _split(task_spec, "test", cell.test_size, cell.seed).to(device)
        batches = _train_batches(task, task_spec, cell, device)
        first_batch = next(batches)  # the first chunk is generated before the clock of the loop starts
        result.data_time_s = time.perf_counter() - data_start
        row["majority_acc"] = majority_accuracy(test)

        torch.manual_seed(cell.seed)
        model = build_model(task, variant.canonical, cell.model).to(device)
        row["params"] = sum(p.numel() for p in model.parameters())
        outcome = train(
            model,
            train_loss=_loss_fn(task, first_batch, batches),
            evaluate=_evaluator(task, val, test, cell.eval_batch_size or 2 * cell.batch_size),
            config=cell.train_config(),
            on_step=on_step,
        )
    except (torch.OutOfMemoryError, MemoryError) as err:
        row.update(status="oom", message=_one_line(err), peak_mem_bytes=memory.peak())
    except UserError:
        raise
    except Exception as err:  # one failing cell must not stop the sweep: its row says what went wrong
        row.update(status="error", message=_one_line(err), peak_mem_bytes=memory.peak())
    else:
        result.train = outcome
        row.update(
            steps=outcome.steps,
            train_time_s=outcome.train_time_s,
            time_per_step_s=outcome.time_per_step_s,
            peak_mem_bytes=memory.peak(),
            best_step=outcome.best_step,
            val_acc=outcome.val_acc,
            test_acc=outcome.test_acc,
            status=outcome.status,
            message=outcome.message,
        )
        identity = {"task": row["task"], "spec": row["spec"], "seed": cell.seed}
        result.curve = [
            {**identity, "step": p.step, "train_loss": p.train_loss, "val_acc": p.val_acc, "elapsed_s": p.elapsed_s}
            for p in outcome.curve
        ]
        if outcome.test is not None and isinstance(outcome.test.details, Scores):
            result.by_distance = [
                {**identity, "distance_bucket": bucket, "n": n, "acc": acc}
                for bucket, n, acc in outcome.test.details.by_distance()
            ]
    result.wall_time_s = time.perf_counter() - cell_start
    return result


def _cross_variant(task: Task, variant_spec: str) -> str:
    """The spec the cross-attention slot runs; empty for models without one."""
    if task.model_kind != "seq2seq":
        return ""
    return resolve_cross_spec(variant_spec)[0]


@functools.lru_cache(maxsize=12)
def _split(task_spec: str, split: Split, size: int, seed: int) -> TaskData:
    # cells of one sweep share a task and seed across variants: generate (or read) each split once
    return create_task(task_spec).make_split(split, size, seed)


def _train_batches(task: Task, task_spec: str, cell: AccuracyCell, device: torch.device) -> Iterator[TaskData]:
    """Training batches forever: fresh streamed examples, or epochs over a fixed, reshuffled train set."""
    if cell.train_size is None and task.can_stream:
        chunks = task.stream("train", cell.seed, chunk_size=TRAIN_CHUNK_BATCHES * cell.batch_size)
        for chunk in chunks:
            chunk = chunk.without_distances().to(device)
            for start in range(0, len(chunk) - cell.batch_size + 1, cell.batch_size):
                yield chunk.select(slice(start, start + cell.batch_size))
        return
    size = cell.train_size if cell.train_size is not None else cell.steps * cell.batch_size
    data = _split(task_spec, "train", size, cell.seed).without_distances().to(device)
    order = torch.Generator().manual_seed(cell.seed)
    while True:
        permutation = torch.randperm(len(data), generator=order)
        for start in range(0, len(data) - cell.batch_size + 1, cell.batch_size):
            yield data.select(permutation[start : start + cell.batch_size].to(device))


def _loss_fn(task: Task, first: TaskData, rest: Iterator[TaskData]) -> Callable[[nn.Module, int], torch.Tensor]:
    pending: list[TaskData] = [first]

    def train_loss(model: nn.Module, step: int) -> torch.Tensor:
        batch = pending.pop() if pending else next(rest)
        return loss_of(logits_of(model, task.model_kind, batch), batch.targets)

    return train_loss


def _evaluator(task: Task, val: TaskData, test: TaskData, batch_size: int) -> Callable[[nn.Module, str], Evaluation]:
    splits = {"val": val, "test": test}

    def evaluate(model: nn.Module, split: str) -> Evaluation:
        scores = score(model, task.model_kind, splits[split], batch_size=batch_size)
        return Evaluation(scores.accuracy, scores)

    return evaluate


class _PeakMemory:
    """Peak memory of a cell: CUDA's allocator counter, or the growth of the CPU process's peak RSS."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            self.device = device
        else:
            self.baseline = _max_rss_bytes()

    def peak(self) -> int:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated(self.device))
        return max(0, _max_rss_bytes() - self.baseline)


def _max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:500]
