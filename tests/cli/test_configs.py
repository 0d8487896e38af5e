"""Option parsing without running a sweep: the job is patched, and the configuration it received is checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.core.baseline import BASELINE
from attnbench.core.registry import canonical_spec
from attnbench.runs.schema import ACCURACY_COLUMNS, COMPLEXITY_COLUMNS
from attnbench.sweeps import accuracy, complexity, suite
from attnbench.sweeps.accuracy import AccuracyConfig
from attnbench.sweeps.complexity_config import ComplexityConfig

runner = CliRunner()


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What each patched job was handed: {"complexity": config, "accuracy": config, "suite": (c, a)}."""
    seen: dict[str, Any] = {}

    def complexity_job(config: ComplexityConfig, run_dir: Any, executor: Any, **kwargs: Any) -> pd.DataFrame:
        seen["complexity"] = config
        return pd.DataFrame(columns=list(COMPLEXITY_COLUMNS))

    def accuracy_job(config: AccuracyConfig, run_dir: Any, executor: Any, **kwargs: Any) -> pd.DataFrame:
        seen["accuracy"] = config
        return pd.DataFrame(columns=list(ACCURACY_COLUMNS))

    def run_suite(run_dir: Any, executor: Any, *, complexity: Any, accuracy: Any, **kwargs: Any) -> None:
        seen["suite"] = (complexity, accuracy)

    monkeypatch.setattr(complexity, "complexity_job", complexity_job)
    monkeypatch.setattr(accuracy, "accuracy_job", accuracy_job)
    monkeypatch.setattr(suite, "run_suite", run_suite)
    monkeypatch.setattr("attnbench.reporting.report.write_report", lambda path, **kwargs: path / "report.md")
    return seen


def _ok(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def test_complexity_options_become_the_config(tmp_path: Path, received: dict[str, Any]) -> None:
    _ok(["bench", "complexity", "--variant", "window:block=16,radius=4", "--variant", "softmax", "--seq-len",
         "64..256", "--seq-len", "100", "--pass", "fwd", "--heads", "2", "--head-dim", "8", "--causal", "--threads",
         "3", "--time-budget", "9", "--memory-budget", "1GiB", "--out", str(tmp_path / "run")])  # fmt: skip
    config = received["complexity"]
    assert config.variants == [canonical_spec("window:block=16,radius=4"), "softmax"]
    assert config.seq_lens == [64, 100, 128, 256] and config.passes == ["fwd"]
    assert (config.heads, config.head_dim, config.causal, config.threads) == (2, 8, True, 3)
    assert config.time_budget_s == 9 and config.memory_budget == "1GiB" and config.memory_budget_bytes == 2**30


def test_complexity_defaults_are_the_configs_own(tmp_path: Path, received: dict[str, Any]) -> None:
    _ok(["bench", "complexity", "--variant", "softmax", "--out", str(tmp_path / "run")])
    config = received["complexity"]
    defaults = ComplexityConfig(variants=["softmax"])
    for name in ("seq_lens", "passes", "batch", "heads", "head_dim", "causal", "dtype", "device", "time_budget_s",
                 "min_run_time", "max_run_time", "memory_budget"):  # fmt: skip
        assert getattr(config, name) == getattr(defaults, name), name
    assert config.threads == torch.get_num_threads()


def test_resume_rebuilds_the_recorded_config(tmp_path: Path, received: dict[str, Any]) -> None:
    run = tmp_path / "run"
    _ok(["bench", "complexity", "--variant", "linear", "--seq-len", "32..64", "--threads", "1", "--out", str(run)])
    first = received.pop("complexity")
    _ok(["bench", "complexity", "--resume", str(run)])
    assert received["complexity"] == first


def test_accuracy_options_become_task_plans(tmp_path: Path, received: dict[str, Any]) -> None:
    _ok(["bench", "accuracy", "--task", "mqar:pairs=4", "--variant", "linear", "--seed", "3", "--steps", "7",
         "--threads", "2", "--out", str(tmp_path / "run")])  # fmt: skip
    config = received["accuracy"]
    (plan,) = config.tasks
    assert plan.task == "mqar:pairs=4" and plan.variants == ["linear"] and plan.seeds == [3]
    assert plan.overrides == {"steps": 7} and config.threads == 2 and config.device == "cpu"


def test_accuracy_defaults_are_the_configs_own(tmp_path: Path, received: dict[str, Any]) -> None:
    _ok(["bench", "accuracy", "--task", "mqar", "--out", str(tmp_path / "run")])
    config = received["accuracy"]
    (plan,) = config.tasks
    assert plan.variants == [BASELINE] and plan.preset == "quick"
    assert config.threads == AccuracyConfig(tasks=[]).threads


def test_run_builds_both_configs_from_the_suite(tmp_path: Path, received: dict[str, Any]) -> None:
    _ok(["run", "--suite", "quick", "--threads", "2", "--out", str(tmp_path / "run")])
    complexity_config, accuracy_config = received["suite"]
    assert complexity_config.seq_lens == [256, 512, 1024, 2048, 4096] and complexity_config.threads == 2
    assert complexity_config.time_budget_s == 60 and accuracy_config.threads == 2
    assert [plan.task for plan in accuracy_config.tasks] == ["mqar", "mqar", "listops"]
    assert accuracy_config.tasks[0].seq_lens == [16, 32, 64]


def test_accuracy_seq_len_is_repeatable_and_takes_ranges(tmp_path: Path, received: dict[str, Any]) -> None:
    _ok(["bench", "accuracy", "--task", "mqar:pairs=4", "--seq-len", "32..128", "--seq-len", "48",
         "--out", str(tmp_path / "run")])  # fmt: skip
    (plan,) = received["accuracy"].tasks
    assert plan.seq_lens == [32, 48, 64, 128] and "seq_len" not in plan.overrides
    cells = received["accuracy"].cells()
    assert [c.seq_len for c in cells] == [32, 48, 64, 128]  # one cell per n, shortest first


def test_accuracy_one_seq_len_overrides_the_presets(tmp_path: Path, received: dict[str, Any]) -> None:
    _ok(["bench", "accuracy", "--task", "mqar", "--seq-len", "64", "--out", str(tmp_path / "run")])
    (plan,) = received["accuracy"].tasks
    assert plan.seq_lens is None and plan.overrides == {"seq_len": 64}


def test_accuracy_refuses_a_length_its_task_cannot_take_before_training(
    tmp_path: Path, received: dict[str, Any]
) -> None:
    result = runner.invoke(app, ["bench", "accuracy", "--task", "mqar:pairs=8", "--seq-len", "16..64",
                                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 2 and "accuracy" not in received
    assert "cannot run at n = 16" in result.output and "seq_len must be at least 32" in result.output


def test_accuracy_mad_grid_trains_each_task_over_mads_lr_and_weight_decay(
    tmp_path: Path, received: dict[str, Any]
) -> None:
    from attnbench.tasks.mad import MAD_LR_GRID, MAD_WEIGHT_DECAY_GRID

    _ok(["bench", "accuracy", "--task", "memorization", "--preset", "mad-quick", "--mad-grid",
         "--out", str(tmp_path / "run")])  # fmt: skip
    cells = received["accuracy"].cells()
    assert sorted((c.lr, c.weight_decay) for c in cells) == sorted(
        (lr, wd) for lr in MAD_LR_GRID for wd in MAD_WEIGHT_DECAY_GRID
    )
