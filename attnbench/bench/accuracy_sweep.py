"""The accuracy sweep: task × variant × seed cells, each trained in a fresh worker process.

A fresh worker per cell makes its peak-RSS reading its own, contains an out-of-memory kill, and lets a
cell that overruns its budget be stopped. Rows go to ``accuracy.csv``, ``curves.csv`` and
``accuracy_by_distance.csv`` as each cell finishes; ``--resume`` runs only the missing cells.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.bench.accuracy import AccuracyCell, get_preset, run_accuracy_cell
from attnbench.bench.results import ACCURACY_COLUMNS, BY_DISTANCE_COLUMNS, CURVES_COLUMNS, RunDir
from attnbench.bench.workers import Executor
from attnbench.core.errors import UserError
from attnbench.core.registry import attention_class, canonical_spec, options_of, parse_attention_spec, split_spec
from attnbench.tasks import available_tasks, canonical_task_spec, create_task, task_class, task_spec_with
from attnbench.tasks.models import ModelSize

PROGRESS_EVERY_S = 0.5
DEFAULT_THREADS = 1  # the quick presets' small models train several times faster on one thread than on two
WORKER_GRACE_S = 120.0  # data generation and testing happen outside the training loop's own budget
DEFAULT_CELL_LIMIT_S = 1800.0


@dataclass
class TaskPlan:
    """One task of a sweep: which variants and seeds, under which preset, with which overrides."""

    task: str  # task name or full task spec; a bare name takes the preset's own spec
    variants: list[str]
    preset: str = "quick"
    seeds: list[int] | None = None  # None: seeds 0..k-1 where k is the preset's seed count
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.variants:
            raise UserError(f"task {self.task!r}: no variants to train (pass --variant SPEC)")
        self.variants = [canonical_spec(v) for v in self.variants]
        given = self.task
        self.task = canonical_task_spec(given)  # an unknown task or option fails here, naming it
        # A seq_len in the task spec becomes the cell's (else the preset's would win); read from the spec as
        # given, since the canonical one drops a length equal to the task's default.
        seq_len = split_spec(given)[1].get("seq_len")
        if seq_len is not None:
            if self.overrides.get("seq_len", seq_len) != seq_len:
                raise UserError(
                    f"task {self.task!r} sets seq_len={seq_len} but the overrides set "
                    f"seq_len={self.overrides['seq_len']}; give one"
                )
            self.overrides = {**self.overrides, "seq_len": seq_len}
            self.task = task_spec_with(self.task, seq_len=None)
        preset = get_preset(self.task, self.preset)
        if self.seeds is None:
            self.seeds = list(range(preset.seeds))
        if not self.seeds:
            raise UserError(f"task {self.task!r}: no seeds")
        self.check()

    def check(self) -> None:
        """Fail before any cell runs on what would fail them all: bad settings, a bad length, missing data files."""
        cell = self.cell(self.variants[0], seed=0, device="cpu")
        create_task(cell.task_spec).check_data()

    def cell(self, variant: str, *, seed: int, device: str) -> AccuracyCell:
        preset = get_preset(self.task, self.preset)
        _, options = split_spec(self.task)  # the user's task options go on top of the preset's own
        task = task_spec_with(preset.task, **options)
        return preset.cell(variant, seed=seed, device=device, **self.overrides).with_overrides(task=task)

    def cells(self, device: str) -> list[AccuracyCell]:
        return [self.cell(variant, seed=seed, device=device) for seed in self.seeds or [] for variant in self.variants]


@dataclass
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


# inside the worker -----------------------------------------------------------------------------------------
def cell_to_payload(cell: AccuracyCell, *, threads: int, plugins: list[str]) -> dict[str, Any]:
    return {"cell": asdict(cell), "threads": threads, "plugins": plugins}


def cell_from_dict(data: dict[str, Any]) -> AccuracyCell:
    values = dict(data)
    values["model"] = ModelSize(**values["model"])
    return AccuracyCell(**values)


def run_cell_in_worker(payload: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(payload["threads"])
    # the row's cross_variant column records a cross-attention fallback; a warning per cell is only noise
    warnings.filterwarnings("ignore", message=".*the cross-attention slot uses", category=UserWarning)
    cell = cell_from_dict(payload["cell"])
    last = [0.0]

    def on_step(info: Any) -> None:
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            report({"step": info.step, "steps": info.total_steps, "loss": info.loss, "val_acc": info.val_acc})

    result = run_accuracy_cell(cell, on_step=on_step)
    return {"row": result.row, "curve": result.curve, "by_distance": result.by_distance}


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
    done = Counter(row_key(r) for _, r in run_dir.rows("accuracy.csv", ACCURACY_COLUMNS).iterrows())
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


def run_accuracy_sweep(
    config: AccuracyConfig,
    run_dir: RunDir,
    executor: Executor,
    *,
    on_start: Callable[[AccuracyCell], None] | None = None,
    on_progress: Callable[[AccuracyCell, dict[str, Any]], None] | None = None,
    on_done: Callable[[AccuracyCell, dict[str, Any]], None] | None = None,
    max_cells: int | None = None,
) -> int:
    for side in ("curves.csv", "accuracy_by_distance.csv"):  # left by a cell killed before its main row
        run_dir.drop_orphan_rows(side, main="accuracy.csv", key=("task", "spec", "seed"))
    rows = run_dir.appender("accuracy.csv", ACCURACY_COLUMNS)
    curves = run_dir.appender("curves.csv", CURVES_COLUMNS)
    by_distance = run_dir.appender("accuracy_by_distance.csv", BY_DISTANCE_COLUMNS)
    ran = 0
    for cell in pending(config, run_dir):
        if max_cells is not None and ran >= max_cells:
            run_dir.stopped_early = True  # cells are left: the session is marked interrupted, not complete
            break
        if on_start:
            on_start(cell)
        limit = (cell.time_budget_s or DEFAULT_CELL_LIMIT_S) * 1.5 + WORKER_GRACE_S
        outcome = executor.run(
            "accuracy",
            cell_to_payload(cell, threads=config.threads, plugins=config.plugins),
            timeout_s=limit,
            on_progress=(lambda info, cell=cell: on_progress(cell, info)) if on_progress else None,
        )
        if outcome.status == "ok":
            result = outcome.result
            curves.extend(result["curve"])
            by_distance.extend(result["by_distance"])
            row = result["row"]
        else:
            row = _failed_row(cell, outcome.status, outcome.message)
        rows.append(row)  # last: a row present means its curves and distances are complete
        ran += 1
        if on_done:
            on_done(cell, row)
    return ran


def accuracy_job(
    config: AccuracyConfig, run_dir: RunDir, executor: Executor, *, max_cells: int | None = None
) -> pd.DataFrame:
    """Run (or finish) the sweep with a progress bar showing the running cell's loss and accuracy."""
    from attnbench.bench.console import cell_progress

    total = len(pending(config, run_dir))
    if max_cells is not None:
        total = min(total, max_cells)
    with cell_progress(total, "accuracy") as progress:
        task_id = progress.task_ids[0]

        def label(cell: AccuracyCell) -> str:
            return f"{cell.task.partition(':')[0]} {canonical_spec(cell.variant)} seed={cell.seed}"

        def on_progress(cell: AccuracyCell, info: dict[str, Any]) -> None:
            val = "" if info.get("val_acc") is None else f" val {info['val_acc']:.3f}"
            progress.update(
                task_id, current=f"{label(cell)}: step {info['step']}/{info['steps']} loss {info['loss']:.3f}{val}"
            )

        def on_done(cell: AccuracyCell, row: dict[str, Any]) -> None:
            acc = row.get("test_acc")
            result = f"test {acc:.3f}" if isinstance(acc, float) else row["status"]
            progress.update(task_id, advance=1, current=f"{label(cell)}: {result}")

        run_accuracy_sweep(
            config, run_dir, executor,
            on_start=lambda cell: progress.update(task_id, current=f"{label(cell)}: preparing data"),
            on_progress=on_progress, on_done=on_done, max_cells=max_cells,
        )  # fmt: skip
    return run_dir.rows("accuracy.csv", ACCURACY_COLUMNS)
