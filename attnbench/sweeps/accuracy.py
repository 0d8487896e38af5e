"""The accuracy sweep: task × variant × seed cells, each trained in a fresh worker process.

A fresh worker per cell makes its peak-RSS reading its own, contains an out-of-memory kill, and lets a
cell that overruns its budget be stopped. Rows go to ``accuracy.csv``, ``curves.csv`` and
``accuracy_by_distance.csv`` as each cell finishes; ``--resume`` runs only the missing cells.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.core.errors import UserError
from attnbench.core.registry import (
    canonical_spec,
    create_attention,
    options_of,
    split_spec,
)
from attnbench.execution.protocol import Executor, Progress
from attnbench.runs.rundir import RunDir
from attnbench.runs.schema import (
    ACCURACY_COLUMNS,
    ACCURACY_CSV,
    BY_DISTANCE_COLUMNS,
    BY_DISTANCE_CSV,
    CURVES_COLUMNS,
    CURVES_CSV,
)
from attnbench.sweeps.events import CellFinished, CellProgress, CellStarted, OnEvent, PhaseStarted, ignore
from attnbench.tasks import available_tasks, canonical_task_spec, create_task, task_class, task_spec_with
from attnbench.tasks.lengths import check_task_lengths
from attnbench.tasks.mad import MAD_LR_GRID, MAD_WEIGHT_DECAY_GRID
from attnbench.training.baselines import canonical_model_spec, get_baseline, model_name_and_family
from attnbench.training.presets import get_preset
from attnbench.training.settings import AccuracyCell, AccuracyCellResult
from attnbench.training.worker import TrainingJob, train_cell

DEFAULT_PRESET = "quick"
DEFAULT_THREADS = 1  # the quick presets' small models train several times faster on one thread than on two
WORKER_GRACE_S = 120.0  # data generation and testing happen outside the training loop's own budget
DEFAULT_CELL_LIMIT_S = 1800.0


@dataclass(frozen=True)
class TaskPlan:
    """One task of a sweep: which variants and seeds, under which preset, with which overrides."""

    task: str  # task name or full task spec; a bare name takes the preset's own spec
    variants: list[str]
    preset: str = DEFAULT_PRESET
    seeds: list[int] | None = None  # None: seeds 0..k-1 where k is the preset's seed count
    overrides: dict[str, Any] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)  # model baselines (``lstm``) trained beside the variants
    seq_lens: list[int] | None = None  # several lengths: one cell per n; None: the one length of spec/overrides/preset
    # options the spec set to the task's default, which the canonical spec drops, where the preset sets another
    pinned: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # normalised once: the frozen plan is what the manifest records
        if self.seq_lens is not None:
            lengths = sorted({int(n) for n in self.seq_lens})
            if not lengths:
                raise UserError(f"task {self.task!r}: seq_lens is empty; give at least one length")
            if "seq_len" in self.overrides or "seq_len" in split_spec(self.task)[1]:
                raise UserError(f"task {self.task!r}: give its lengths once, as seq_lens or as seq_len, not both")
            object.__setattr__(self, "seq_lens", lengths)
        if not self.variants:
            raise UserError(f"task {self.task!r}: no variants to train (pass --variant SPEC)")
        object.__setattr__(self, "variants", [canonical_spec(v) for v in self.variants])
        object.__setattr__(self, "baselines", list(dict.fromkeys(get_baseline(b).name for b in self.baselines)))
        given = self.task
        object.__setattr__(self, "task", canonical_task_spec(given))  # an unknown task or option fails here, naming it
        # A seq_len in the task spec becomes the cell's (else the preset's would win); read from the spec as
        # given, since the canonical one drops a length equal to the task's default.
        preset_options = split_spec(get_preset(self.task, self.preset).task)[1]
        dropped = {k: v for k, v in split_spec(given)[1].items() if k not in split_spec(self.task)[1]}
        pinned = {k: v for k, v in dropped.items() if k in preset_options and k != "seq_len"}
        object.__setattr__(self, "pinned", {**self.pinned, **pinned})
        seq_len = split_spec(given)[1].get("seq_len")
        if seq_len is not None:
            if self.overrides.get("seq_len", seq_len) != seq_len:
                raise UserError(
                    f"task {self.task!r} sets seq_len={seq_len} but the overrides set "
                    f"seq_len={self.overrides['seq_len']}; give one"
                )
            object.__setattr__(self, "overrides", {**self.overrides, "seq_len": seq_len})
            object.__setattr__(self, "task", task_spec_with(self.task, seq_len=None))
        preset = get_preset(self.task, self.preset)
        if self.seeds is None:
            object.__setattr__(self, "seeds", list(range(preset.seeds)))
        if not self.seeds:
            raise UserError(f"task {self.task!r}: no seeds")
        self.check()

    def check(self) -> None:
        """Fail before any cell runs on what would fail them all: bad settings, a bad length, missing data files."""
        cell = self.cell(self.variants[0], seed=0, device="cpu")
        if self.seq_lens is not None:  # every length, with the task's own one-line error for the first it refuses
            check_task_lengths(task_spec_with(cell.task, seq_len=None), self.seq_lens)
        create_task(cell.task_spec).check_data()
        for seed in self.seeds or []:  # every seed's cell checks its own settings (a seed beyond 64 bits, ...)
            self.cell(self.variants[0], seed=seed, device="cpu")
        head_dim = cell.model.d_model // cell.model.num_heads
        for variant in self.variants:  # built once, now: an option the constructor rejects is refused up front
            try:
                create_attention(variant, head_dim=head_dim, num_heads=cell.model.num_heads)
            except UserError as err:
                raise UserError(f"task {self.task!r}, variant {variant}: {err}") from None
            except Exception as err:  # a plugin's constructor may raise anything
                raise UserError(
                    f"task {self.task!r}, variant {variant}: its constructor raised {type(err).__name__}: {err}"
                ) from None

    def lengths(self) -> list[int | None]:
        """The lengths this plan trains at; ``[None]``: the one length its spec, overrides or preset give."""
        return list(self.seq_lens) if self.seq_lens is not None else [None]

    def cell(self, variant: str, *, seed: int, device: str, seq_len: int | None = None) -> AccuracyCell:
        preset = get_preset(self.task, self.preset)
        _, options = split_spec(self.task)  # the user's task options go on top of the preset's own
        task = task_spec_with(preset.task, **options, **self.pinned)
        overrides = self.overrides if seq_len is None else {**self.overrides, "seq_len": seq_len}
        return preset.cell(variant, seed=seed, device=device, **overrides).with_overrides(task=task)

    def cells(self, device: str) -> list[AccuracyCell]:
        """Shortest length first (a sweep stopped early has the cheap lengths), then seeds, then models."""
        models = [*self.variants, *self.baselines]
        return [
            self.cell(model, seed=seed, device=device, seq_len=n)
            for n in self.lengths()
            for seed in self.seeds or []
            for model in models
        ]


@dataclass(frozen=True)
class AccuracyConfig:
    tasks: list[TaskPlan]
    device: str = "cpu"
    threads: int = DEFAULT_THREADS
    plugins: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccuracyConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["tasks"] = [TaskPlan(**t) for t in data["tasks"]]
        return cls(**values)

    def cells(self) -> list[AccuracyCell]:
        return [cell for plan in self.tasks for cell in plan.cells(self.device)]


def mad_grid() -> list[dict[str, float]]:
    """MAD's learning-rate × weight-decay grid as training overrides, one per point (a plan per point)."""
    return [{"lr": lr, "weight_decay": wd} for lr in MAD_LR_GRID for wd in MAD_WEIGHT_DECAY_GRID]


CellKey = tuple[str, int, str, int]


def cell_key(cell: AccuracyCell) -> CellKey:
    """A cell's row in accuracy.csv: (task spec without seq_len, seq_len, canonical variant, seed)."""
    spec = cell.task_spec
    return task_spec_with(spec, seq_len=None), create_task(spec).seq_len, canonical_model_spec(cell.variant), cell.seed


def row_key(row: pd.Series) -> CellKey:
    seq_len = -1 if pd.isna(row["seq_len"]) else int(row["seq_len"])
    return str(row["task"]), seq_len, str(row["spec"]), int(row["seed"])


# the sweep -------------------------------------------------------------------------------------------------
def _failed_row(cell: AccuracyCell, status: str, message: str) -> dict[str, Any]:
    task, seq_len, spec, seed = cell_key(cell)
    name, family = model_name_and_family(spec)
    return dict.fromkeys(ACCURACY_COLUMNS) | {
        "task": task, "spec": spec, "variant": name, "family": family, "seed": seed,
        "seq_len": seq_len, "model": cell.model.describe(), "status": status, "message": message,
    }  # fmt: skip


def pending(config: AccuracyConfig, run_dir: RunDir) -> list[AccuracyCell]:
    """The cells without a row yet, in config order."""
    # Counted, not a set: two plans can share a key (one task under two presets), and cells run in config
    # order, so the rows written for a key belong to its first cells.
    done = Counter(row_key(r) for _, r in run_dir.rows(ACCURACY_CSV, ACCURACY_COLUMNS).iterrows())
    todo = []
    for cell in config.cells():
        key = cell_key(cell)
        if done[key] > 0:
            done[key] -= 1
        else:
            todo.append(cell)
    return todo


def tasks_with_data_dir(tasks: list[str], data_dir: Path, *, named: bool) -> list[str]:
    """``data_dir`` set on the tasks that read files; a ``named`` (not defaulted) task that doesn't is refused."""
    if not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a directory (point it at LRA's listops-1000 folder)")
    readers = [name for name in available_tasks() if "data_dir" in options_of(task_class(name))]
    names = [canonical_task_spec(t).partition(":")[0] for t in tasks]
    others = sorted({name for name in names if name not in readers})
    if named and others:
        raise UserError(
            f"--data-dir is read only by {', '.join(readers)}, not by {', '.join(others)}: "
            "drop --data-dir, or run those tasks without it"
        )
    where = str(data_dir.resolve())  # absolute: a --resume from another directory still finds the files
    return [task_spec_with(t, data_dir=where) if n in readers else t for t, n in zip(tasks, names, strict=True)]


def label(cell: AccuracyCell) -> str:
    length = f" n={cell.seq_len}" if cell.seq_len is not None else ""
    return f"{cell.task.partition(':')[0]}{length} {canonical_model_spec(cell.variant)} seed={cell.seed}"


def run_accuracy_sweep(
    config: AccuracyConfig,
    run_dir: RunDir,
    executor: Executor,
    *,
    on_event: OnEvent = ignore,
    max_cells: int | None = None,
) -> int:
    for side in (CURVES_CSV, BY_DISTANCE_CSV):  # left by a cell killed before its main row
        run_dir.drop_orphan_rows(side, main=ACCURACY_CSV, key=("task", "spec", "seed", "seq_len"))
    rows = run_dir.appender(ACCURACY_CSV, ACCURACY_COLUMNS)
    curves = run_dir.appender(CURVES_CSV, CURVES_COLUMNS)
    by_distance = run_dir.appender(BY_DISTANCE_CSV, BY_DISTANCE_COLUMNS)
    todo = deque(pending(config, run_dir))
    on_event(PhaseStarted("accuracy", len(todo) if max_cells is None else min(len(todo), max_cells)))
    started = in_flight = 0

    def feed() -> None:
        nonlocal started, in_flight
        while in_flight < executor.capacity and todo:
            if max_cells is not None and started >= max_cells:
                run_dir.stopped_early = True  # cells are left: the session is marked interrupted, not complete
                todo.clear()
                return
            cell = todo.popleft()
            started += 1
            on_event(CellStarted(f"{label(cell)}: preparing data"))
            limit = (cell.time_budget_s or DEFAULT_CELL_LIMIT_S) * 1.5 + WORKER_GRACE_S
            job = TrainingJob(cell, threads=config.threads, plugins=tuple(config.plugins))
            executor.submit(train_cell, job, timeout_s=limit, tag=cell)
            in_flight += 1

    feed()
    for event in executor.outcomes():
        cell = event.tag
        if isinstance(event, Progress):
            on_event(CellProgress(label(cell), event.info))
            continue
        if event.status == "ok":
            result: AccuracyCellResult = event.result
            curves.extend(result.curve)
            by_distance.extend(result.by_distance)
            row = result.row
        else:
            row = _failed_row(cell, event.status, event.message)
        rows.append(row | {"node": event.node})  # last: a row present means its curves and distances are complete
        on_event(CellFinished(label(cell), row))
        in_flight -= 1
        feed()
    return started


def accuracy_job(
    config: AccuracyConfig,
    run_dir: RunDir,
    executor: Executor,
    *,
    max_cells: int | None = None,
    on_event: OnEvent = ignore,
) -> pd.DataFrame:
    """Run (or finish) the sweep; returns every row of the run."""
    run_accuracy_sweep(config, run_dir, executor, on_event=on_event, max_cells=max_cells)
    return run_dir.rows(ACCURACY_CSV, ACCURACY_COLUMNS)
