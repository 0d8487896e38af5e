"""`attnbench bench accuracy` / `run`: settings fail up front, resume tells cells apart, plugin tasks run."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.sweeps.accuracy import TaskPlan
from attnbench.tasks import TASKS, ModelKind, Task
from attnbench.training.presets import get_preset

runner = CliRunner()
TINY = ["--steps", "2", "--d-model", "16", "--layers", "1", "--heads", "2", "--threads", "1"]


# settings that would fail every cell fail before any runs ------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "mqar", "--lr", "0"], "lr must be > 0"),
        (["--task", "mqar", "--seq-len", "8"], "seq_len must be at least 16"),
        (["--task", "mqar", "--time-budget", "0"], "time_budget_s must be > 0"),
        (["--task", "mqar", "--time-budget", "-5"], "time_budget_s must be > 0"),
        (["--task", "mqar:seq_len=64", "--seq-len", "32"], "sets seq_len=64 but the overrides set seq_len=32"),
    ],
)
def test_bad_settings_fail_up_front(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["bench", "accuracy", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()  # refused before a run directory (or a cell) exists


def test_a_missing_listops_file_is_named(tmp_path: Path) -> None:
    data = tmp_path / "listops-1000"
    data.mkdir()
    (data / "basic_train.tsv").write_text("Source\tTarget\n")
    result = runner.invoke(app, ["bench", "accuracy", "--task", "listops", "--data-dir", str(data),
                                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "basic_val.tsv" in result.output and "does not exist" in result.output
    assert not (tmp_path / "run").exists()


def test_data_dir_is_refused_for_a_task_that_does_not_read_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "accuracy", "--task", "listops", "--task", "mqar", "--data-dir",
                                 str(tmp_path), "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--data-dir is read only by listops, not by mqar" in result.output


def test_a_seq_len_in_the_task_spec_beats_the_presets() -> None:
    # 128 is mqar's default length, so the canonical spec drops it: it must still reach the cell
    for spec, length in (("mqar:seq_len=64", 64), ("mqar:seq_len=128", 128), ("mqar", get_preset("mqar").seq_len)):
        cell = TaskPlan(task=spec, variants=["softmax"]).cells("cpu")[0]
        assert cell.seq_len == length and cell.task_spec.startswith("mqar:pairs=4")


# resume ----------------------------------------------------------------------------------------------------
SMALL = "steps = 2, d_model = 16, num_layers = 1, num_heads = 2, val_size = 32, test_size = 32"
TWO_LENGTHS = f"""
name = "two"

[[accuracy.tasks]]
task = "listops"
variants = ["softmax"]
overrides = {{ {SMALL}, seq_len = 64, train_size = 64 }}

[[accuracy.tasks]]
task = "listops"
variants = ["softmax"]
overrides = {{ {SMALL}, seq_len = 128, train_size = 64 }}

[[accuracy.tasks]]
task = "mqar"
variants = ["softmax"]
overrides = {{ {SMALL}, seq_len = 32 }}

[[accuracy.tasks]]
task = "mqar"
preset = "standard"
seeds = [0]
variants = ["softmax"]
overrides = {{ {SMALL}, seq_len = 32 }}
"""


def test_resume_finishes_one_task_at_two_lengths_and_under_two_presets(tmp_path: Path) -> None:
    suite = tmp_path / "two.toml"
    suite.write_text(TWO_LENGTHS)
    out = tmp_path / "run"

    def rows_after(args: list[str]) -> pd.DataFrame:
        result = runner.invoke(app, ["run", *args])
        assert result.exit_code == 0, result.output
        return pd.read_csv(out / "accuracy.csv")

    assert len(rows_after(["--suite", str(suite), "--out", str(out), "--threads", "1", "--max-cells", "1"])) == 1
    assert json.loads((out / "manifest.json").read_text())["sessions"][-1]["status"] == "interrupted"
    # the two mqar plans give rows with equal keys: the resume must count them, not stop at the first
    assert len(rows_after(["--resume", str(out), "--max-cells", "2"])) == 3
    rows = rows_after(["--resume", str(out)])
    assert len(rows) == 4 and set(rows["status"]) <= {"ok", "timeout"}
    listops = rows[rows["task"] == "listops"]
    assert sorted(listops["seq_len"]) == [64, 128]
    assert not listops.duplicated(["seq_len", "spec", "seed"]).any()
    assert (rows["task"].str.startswith("mqar")).sum() == 2  # one row per plan
    assert len(rows_after(["--resume", str(out)])) == 4  # nothing left to run


# a plugin's task -------------------------------------------------------------------------------------------
PLUGIN = """
from typing import Any, ClassVar

import numpy as np
import torch

from attnbench.tasks import Task, TaskData, register_task


class FirstToken(Task):
    \"\"\"Classify a sequence by its first token.\"\"\"

    model_kind: ClassVar[str] = "classifier"

    def __init__(self, *, seq_len: int = 16) -> None:
        super().__init__(seq_len=seq_len)

    @property
    def vocab_size(self) -> int:
        return 8

    @property
    def num_classes(self) -> int:
        return 8

    def generate(self, size: int, rng: np.random.Generator) -> TaskData:
        tokens = torch.from_numpy(rng.integers(1, 8, size=(size, self.seq_len)))
        return TaskData(inputs=tokens, targets=tokens[:, 0].clone())


register_task("first-token-test")(FirstToken)


@register_task("first-token-presets-test")
class WithPresets(FirstToken):
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"seq_len": 12, "val_size": 32, "test_size": 48, "num_heads": 2},
    }
"""


@pytest.fixture
def scratch_tasks(scratch_registry: None) -> Iterator[None]:
    before = set(TASKS.names())
    yield
    for name in set(TASKS.names()) - before:
        TASKS.unregister(name)


def test_a_plugin_task_runs_from_the_cli(tmp_path: Path, scratch_tasks: None) -> None:
    plugin = tmp_path / "first_token.py"
    plugin.write_text(PLUGIN)
    out = tmp_path / "run"
    result = runner.invoke(app, ["--plugin", str(plugin), "bench", "accuracy", "--task", "first-token-test",
                                 "--task", "first-token-presets-test", "--variant", "softmax", *TINY,
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "accuracy.csv").set_index("task")
    assert set(rows["status"]) == {"ok"} and (rows["steps"] == 2).all()
    assert rows.loc["first-token-test", "seq_len"] == 16  # no presets: generic defaults, the task's own length
    assert rows.loc["first-token-presets-test", "seq_len"] == 12  # its own quick preset


def test_presets_of_a_task_without_built_in_ones(scratch_tasks: None) -> None:
    class Bare(Task):
        model_kind: ClassVar[ModelKind] = "classifier"

        def __init__(self, *, seq_len: int = 24) -> None:
            super().__init__(seq_len=seq_len)

    class Own(Bare):
        presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
            "quick": {"steps": 7, "d_model": 32},
            "big": {"steps": 70, "seeds": 2},
        }

    TASKS.register("bare-test")(Bare)
    TASKS.register("own-test")(Own)
    quick, standard = get_preset("bare-test"), get_preset("bare-test", "standard")
    assert quick.task == "bare-test" and quick.seq_len is None and quick.seeds == 1
    assert standard.steps == 2 * quick.steps and standard.seeds == 3
    own = get_preset("own-test")
    assert own.steps == 7 and own.model.d_model == 32 and own.batch_size == quick.batch_size
    assert get_preset("own-test", "standard").steps == 14
    assert (get_preset("own-test", "big").steps, get_preset("own-test", "big").seeds) == (70, 2)
    with pytest.raises(ValueError, match=r"preset 'lra' has no settings for task 'bare-test'.*Task.presets"):
        get_preset("bare-test", "lra")
    with pytest.raises(ValueError, match="unknown accuracy preset 'big'"):
        get_preset("bare-test", "big")


def test_resume_follows_n_a_finished_length_is_not_trained_again(tmp_path: Path) -> None:
    from attnbench.runs.rundir import RunDir
    from attnbench.runs.schema import ACCURACY_COLUMNS, ACCURACY_CSV
    from attnbench.sweeps.accuracy import AccuracyConfig, TaskPlan, _failed_row, pending

    plan = TaskPlan(task="mqar:pairs=4", variants=["softmax", "linear"], seq_lens=[32, 64, 128])
    config = AccuracyConfig(tasks=[plan])
    run = RunDir(tmp_path)
    first = [c for c in config.cells() if c.seq_len == 64]
    run.appender(ACCURACY_CSV, ACCURACY_COLUMNS).extend([_failed_row(c, "ok", "") for c in first])
    todo = pending(config, run)
    assert sorted({c.seq_len for c in todo}) == [32, 128] and len(todo) == 4
    assert AccuracyConfig.from_dict(config.to_dict()).cells() == config.cells()  # the manifest round-trips n
