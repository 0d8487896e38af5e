"""Training faults recorded as what they are: a CPU allocation failure is `oom`; side rows carry seq_len."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch.nn.functional as F
from torch import Tensor

from attnbench.core.attention import Attention
from attnbench.core.registry import ATTENTION
from attnbench.runs.rundir import CsvAppender, RunDir
from attnbench.runs.schema import ACCURACY_COLUMNS, CURVES_COLUMNS
from attnbench.training.cell import run_accuracy_cell
from tests.training.test_cell import TINY_TASKS, tiny_cell


class _CpuOutOfMemory(Attention):
    family: ClassVar[str] = "test"

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None):
        if q.requires_grad:  # training, not the first forward of evaluation
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


@pytest.fixture
def cpu_oom_variant() -> Iterator[str]:
    ATTENTION.add("test-cpu-oom", _CpuOutOfMemory)
    yield "test-cpu-oom"
    ATTENTION.unregister("test-cpu-oom")


def test_a_cpu_allocation_failure_in_training_is_oom(cpu_oom_variant: str) -> None:
    result = run_accuracy_cell(tiny_cell(TINY_TASKS["mqar"], cpu_oom_variant))
    assert result.row["status"] == "oom" and "can't allocate memory" in result.row["message"]


def test_side_rows_carry_seq_len_and_orphans_match_the_whole_cell_key(tmp_path: Path) -> None:
    result = run_accuracy_cell(tiny_cell(TINY_TASKS["mqar"]))
    assert result.curve and {c["seq_len"] for c in result.curve} == {result.row["seq_len"]}
    run = RunDir(tmp_path)
    cell = {"task": "t", "spec": "softmax", "seed": 0}
    CsvAppender(tmp_path / "accuracy.csv", ACCURACY_COLUMNS).append(cell | {"seq_len": 64, "status": "ok"})
    curves = CsvAppender(tmp_path / "curves.csv", CURVES_COLUMNS)
    for n in (64, 128):  # the n=128 cell was killed before its main row: its curve rows are orphans
        curves.append(cell | {"seq_len": n, "step": 1, "train_loss": 1.0, "val_acc": 0.5, "elapsed_s": 0.1})
    dropped = run.drop_orphan_rows("curves.csv", main="accuracy.csv", key=("task", "spec", "seed", "seq_len"))
    assert dropped == 1 and list(run.rows("curves.csv")["seq_len"]) == [64]


def test_a_task_at_two_lengths_gets_a_distance_panel_per_length() -> None:
    import pandas as pd

    from attnbench.reporting import plots

    rows = [{"task": "mqar", "spec": "softmax", "seed": 0, "distance_bucket": b, "n": 10, "acc": acc, "seq_len": n}
            for n, acc in ((64, 0.9), (128, 0.5)) for b in ("1", "2-3")]  # fmt: skip
    fig = plots.distance_figure(pd.DataFrame(rows), plots.palette(["softmax"]))
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_title())
    assert [t.split(":")[0] for t in titles] == ["mqar (n=128)", "mqar (n=64)"]
    by_title = {t.split(":")[0]: ax for ax in fig.axes for t in [ax.get_title()] if t}
    assert list(by_title["mqar (n=128)"].get_lines()[0].get_ydata()) == [0.5, 0.5]  # not pooled with n=64
