"""Measured peak memory (fresh worker, VmHWM) against the analytic model and against n² growth.

Ratios within one run only: no absolute thresholds that a noisy machine could break.
"""

from __future__ import annotations

import pytest

from attnbench.execution.local import LocalExecutor
from attnbench.execution.protocol import run_one
from attnbench.measure.cells import CellSpec, MemoryCell
from attnbench.measure.cost import predicted_peak
from attnbench.measure.memory import memory_cell

SHORT, LONG = 2048, 8192  # 4× apart: n² grows 16×, n·w grows 4×


def _cell(spec: str, n: int, *, pass_: str = "fwd+bwd", causal: bool = False) -> CellSpec:
    return CellSpec(spec=spec, scope="attention", pass_=pass_, batch=1, heads=2, head_dim=16, seq_len=n,
                    causal=causal, dtype="float32", device="cpu", threads=1)  # fmt: skip


@pytest.fixture(scope="module")
def executor() -> LocalExecutor:
    return LocalExecutor()


def _measured(executor: LocalExecutor, cell: CellSpec) -> int:
    outcome = run_one(executor, memory_cell, MemoryCell(cell), timeout_s=120)
    assert outcome.status == "ok", outcome.message
    return outcome.result.peak_mem_bytes


@pytest.mark.parametrize(("spec", "causal"), [("window:radius=64", False), ("linear", True), ("bigbird", False)])
def test_sub_quadratic_variants_grow_about_linearly_and_as_predicted(
    executor: LocalExecutor, spec: str, causal: bool
) -> None:
    cells = [_cell(spec, n, causal=causal) for n in (SHORT, LONG)]
    measured = [_measured(executor, c) for c in cells]
    assert measured[1] / measured[0] < 8  # between linear (4×) and quadratic (16×) growth, nearer linear
    for cell, peak in zip(cells, measured, strict=True):
        predicted = predicted_peak(cell)
        assert predicted is not None
        assert predicted / 3 < peak < predicted * 3, (cell.seq_len, peak, predicted)


def test_naive_softmax_holds_its_scores_and_its_prediction_says_so(executor: LocalExecutor) -> None:
    cell = _cell("softmax-naive", LONG, pass_="fwd")
    peak, predicted = _measured(executor, cell), predicted_peak(cell)
    scores = cell.batch * cell.heads * LONG * LONG * 4
    assert predicted is not None and predicted >= scores
    assert peak >= scores
    assert predicted / 3 < peak < predicted * 3
