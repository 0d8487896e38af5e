"""Choosing the executor: one-line errors, suite keys, and the message when Ray is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.cli.jobs import executor_choice
from attnbench.core.errors import UserError
from attnbench.execution.choice import ExecutorChoice
from attnbench.execution.local import LocalExecutor
from attnbench.sweeps.suite_file import parse_suite

runner = CliRunner()


def test_without_ray_the_ray_executor_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    result = runner.invoke(app, ["bench", "complexity", "--variant", "softmax", "--seq-len", "32", "--executor", "ray",
                                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 2
    assert "pip install 'attnbench[ray]'" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2


@pytest.mark.parametrize(
    ("values", "message"),
    [({"executor": "slurm"}, "is not one of local, ray"), ({"retries": -1}, "--retries must be >= 0"),
     ({"executor": "local", "ray_address": "auto"}, "--ray-address is for --executor ray")],
)  # fmt: skip
def test_bad_choices_name_the_fix(values: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        ExecutorChoice(**values)  # type: ignore[arg-type]


def test_command_line_wins_over_the_suite_and_local_is_the_default() -> None:
    assert isinstance(ExecutorChoice().build(), LocalExecutor)
    suite = parse_suite({"complexity": {"variants": ["softmax"]}, "execution": {"executor": "ray", "retries": 3}},
                        source="t.toml", default_name="t")  # fmt: skip
    chosen = executor_choice(None, None, None, {"executor": suite.execution.executor, "retries": 3})
    assert (chosen.executor, chosen.retries) == ("ray", 3)
    assert executor_choice("local", None, 0, {"executor": "ray", "retries": 3}) == ExecutorChoice("local", None, 0)
    assert executor_choice(None, "auto", None).executor == "ray"
    with pytest.raises(UserError, match=r"\[execution\]"):
        parse_suite({"complexity": {"variants": ["softmax"]}, "execution": {"executor": "mpi"}},
                    source="t.toml", default_name="t")  # fmt: skip


def test_a_ray_address_nobody_answers_fails_fast_naming_the_fix() -> None:
    pytest.importorskip("ray")
    from attnbench.execution.ray_executor import check_reachable

    with pytest.raises(UserError, match=r"127\.0\.0\.1:1: nothing answers there.*ray start --head"):
        check_reachable("127.0.0.1:1")
    check_reachable("auto")  # Ray resolves these itself
    check_reachable(None)
