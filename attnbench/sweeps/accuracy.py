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
    attention_class,
    canonical_spec,
    create_attention,
    options_of,
    parse_attention_spec,
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

    def __post_init__(self) -> None:  # normalised once: the frozen plan is what the manifest records
        if not self.variants:
            raise UserError(f"task {self.task!r}: no variants to train (pass --variant SPEC)")
        object.__setattr__(self, "variants", [canonical_spec(v) for v in self.variants])
        given = self.task
        object.__setattr__(self, "task", canonical_task_spec(given))  # an unknown task or option fails here, naming it
        # A seq_len in the task spec becomes the cell's (else the preset's would win); read from the spec as
        # given, since the canonical one drops a length equal to the task's default.
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

    def cell(self, variant: str, *, seed: int, device: str) -> AccuracyCell:
        preset = get_preset(self.task, self.preset)
        _, options = split_spec(self.task)  # the user's task options go on top of the preset's own
        task = task_spec_with(preset.task, **options)
        return preset.cell(variant, seed=seed, device=device, **self.overrides).with_overrides(task=task)

    def cells(self, device: str) -> list[AccuracyCell]:
        return [self.cell(variant, seed=seed, device=device) for seed in self.seeds or [] for variant in self.variants]


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


CellKey = tuple[str, int, str, int]


def cell_key(cell: AccuracyCell) -> CellKey:
    """A cell's row in accuracy.csv: (task spec without seq_len, seq_len, canonical variant, seed)."""
    spec = cell.task_spec
    return task_spec_with(spec, seq_len=None), create_task(spec).seq_len, canonical_spec(cell.variant), cell.seed


def row_key(row: pd.Series) -> CellKey:
    seq_len = -1 if pd.isna(row["seq_len"]) else int(row["seq_len"])
    return str(row["task"]), seq_len, str(row["spec"]), int(row["seed"])


# the sweep -------------------------------------------------------------------------------------------------
def _failed_row(cell: AccuracyCell, status: str, message: str) -> dict[str, Any]:
    task, seq_len, spec, seed = cell_key(cell)
    name = parse_attention_spec(spec).name
    return dict.fromkeys(ACCURACY_COLUMNS) | {
        "task": task, "spec": spec, "variant": name, "family": attention_class(name).family, "seed": seed,
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
    return f"{cell.task.partition(':')[0]} {canonical_spec(cell.variant)} seed={cell.seed}"


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
        rows.append(row)  # last: a row present means its curves and distances are complete
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
