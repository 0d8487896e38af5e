"""One accuracy cell as a worker runs it: threads set, warnings quieted, progress reported every half second."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from attnbench.training.cell import run_accuracy_cell
from attnbench.training.loop import StepInfo
from attnbench.training.settings import AccuracyCell, AccuracyCellResult

PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class TrainingJob:
    """An accuracy cell with how its worker runs it."""

    cell: AccuracyCell
    threads: int
    plugins: tuple[str, ...] = ()
    shares_node: ClassVar[bool] = True  # training is not a timing reading: cells may share a node's cores


def train_cell(job: TrainingJob, report: Callable[[dict[str, Any]], None] | None = None) -> AccuracyCellResult:
    torch.set_num_threads(job.threads)
    # the row's cross_variant column records a cross-attention fallback; a warning per cell is only noise
    warnings.filterwarnings("ignore", message=".*the cross-attention slot uses", category=UserWarning)
    last = [0.0]

    def on_step(info: StepInfo) -> None:
        now = time.perf_counter()
        if report is not None and now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            report({"step": info.step, "steps": info.total_steps, "loss": info.loss, "val_acc": info.val_acc})

    # the trained model's tensors stay in the worker: the parent needs the rows only
    return replace(run_accuracy_cell(job.cell, on_step=on_step), train=None)
