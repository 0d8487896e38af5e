"""The CLI's shape: list, check, one-line errors with exit code 2, failed checks exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.cli import app, main

runner = CliRunner()


def test_list_shows_every_variant_with_its_options() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for expected in ("softmax-naive", "full", "scale: float | none"):
        assert expected in result.output


def test_list_json_and_family_filter() -> None:
    result = runner.invoke(app, ["list", "--json", "--family", "full"])
    assert result.exit_code == 0
    records = json.loads(result.output)
    assert [r["name"] for r in records] == ["softmax", "softmax-naive"]
    assert records[0]["options"] == [{"name": "scale", "type": "float | none", "default": "none"}]
    assert records[0]["exact"] is True and records[0]["cross"] is True


def test_list_unknown_family_is_a_one_line_error() -> None:
    result = runner.invoke(app, ["list", "--family", "nope"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert "no variants in family 'nope'" in result.output and "families: " in result.output


def test_check_passes_a_correct_variant() -> None:
    result = runner.invoke(app, ["check", "softmax", "--seq-len", "19"])
    assert result.exit_code == 0, result.output
    assert "reference_gradients" in result.output and "all checks passed" in result.output


def test_check_exits_1_when_a_check_fails(tmp_path: Path, scratch_registry: None) -> None:
    plugin = tmp_path / "leaky.py"
    plugin.write_text(
        "from attnbench import register_attention\n"
        "from attnbench.variants.full import SoftmaxAttention\n"
        "@register_attention('leaky-test')\n"
        "class Leaky(SoftmaxAttention):\n"
        "    def forward(self, q, k, v, *, causal=False, key_mask=None):\n"
        "        return super().forward(q, k, v, causal=False, key_mask=key_mask)\n"
    )
    result = runner.invoke(app, ["--plugin", str(plugin), "check", "leaky-test"])
    assert result.exit_code == 1, result.output
    assert "causal_invariance" in result.output and "failed" in result.output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "softmx"], "unknown attention 'softmx'. Did you mean 'softmax'"),
        (["check", "softmax:scal=1"], "has no option 'scal'. Options: scale: float | none (default none)"),
        (["check", "softmax", "--device", "tpu"], "--device must be cpu or cuda"),
        (["list", "--bogus"], "No such option: --bogus (see 'attnbench list --help')"),
        (["check"], "Missing argument"),
        (["--plugin", "missing_file.py", "list"], "plugin file 'missing_file.py' does not exist"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    assert message in err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("attnbench ")
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_list_tasks_shows_every_task_with_options_presets_and_scaling() -> None:
    from attnbench.tasks import available_tasks, task_class

    result = runner.invoke(app, ["list", "--tasks", "--json"])
    assert result.exit_code == 0, result.output
    records = {r["name"]: r for r in json.loads(result.output)}
    assert sorted(records) == available_tasks()
    for name, record in records.items():
        assert record["length_scaling"] == task_class(name).length_scaling
        assert {"quick", "standard"} <= set(record["presets"])
    assert {"mad", "mad-quick"} <= set(records["fuzzy-recall"]["presets"]) and "lra" in records["listops"]["presets"]
    assert {"name": "pairs", "type": "int | none", "default": "none"} in records["mqar"]["options"]
    table = runner.invoke(app, ["list", "--tasks"], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "how it scales with n" in table.output
    for name in records:
        assert name in table.output
