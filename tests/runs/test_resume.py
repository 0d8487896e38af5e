"""``--resume`` after the awkward cases: a cell killed between its files, another working directory,
options given in another order, a default that depends on today's free memory, a run cut by --max-cells."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.core import registry
from attnbench.core.errors import UserError
from attnbench.runs.rundir import RunDir
from attnbench.runs.schema import SCHEMA_VERSION
from attnbench.runs.session import open_for_resume

runner = CliRunner()
TINY = ["--seq-len", "32..64", "--heads", "2", "--head-dim", "8", "--min-run-time", "0.01", "--threads", "1"]
KEY = ["spec", "scope", "pass", "seq_len"]


def _run(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def _sessions(out: Path) -> list[str]:
    return [s["status"] for s in json.loads((out / "manifest.json").read_text())["sessions"]]


def test_a_cell_torn_from_the_main_csv_reruns_without_duplicating_its_raw_times(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(["bench", "complexity", "--variant", "softmax", "--variant", "softmax-naive", *TINY,
          "--out", str(out), "--max-cells", "3"])  # fmt: skip
    assert _sessions(out) == ["interrupted"]  # cut short by --max-cells: not complete
    main = out / "complexity.csv"
    text = main.read_text()
    main.write_text(text[: text.rstrip("\n").rfind("\n") + 20])  # killed while writing the third row
    assert len(pd.read_csv(out / "complexity_raw.csv").drop_duplicates(KEY)) == 3  # its raw times are there

    # options in another order than the run's are the same options, not a conflict
    _run(["bench", "complexity", "--resume", str(out), "--variant", "softmax-naive", "--variant", "softmax",
          "--pass", "fwd+bwd", "--pass", "fwd", "--seq-len", "64", "--seq-len", "32"])  # fmt: skip
    assert _sessions(out) == ["interrupted", "complete"]
    rows = pd.read_csv(main)
    assert len(rows) == 8 and not rows.duplicated(KEY).any()
    raw = pd.read_csv(out / "complexity_raw.csv")
    assert not raw.duplicated([*KEY, "attempt", "block"]).any()  # one set of raw times per cell and attempt
    assert set(raw[KEY].itertuples(index=False)) == set(rows[rows["status"] == "ok"][KEY].itertuples(index=False))
    for _, blocks in raw.groupby([*KEY, "attempt"]):
        assert sorted(blocks["block"]) == list(range(len(blocks)))


def test_drop_orphan_rows_keeps_finished_cells_and_replaces_the_file(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    (tmp_path / "main.csv").write_text("task,spec,seed,acc\nt,a,0,0.5\nt,b,0,0.")  # b's row is torn
    side = tmp_path / "curves.csv"
    side.write_text("task,spec,seed,step\nt,a,0,1\nt,a,0,2\nt,b,0,1\nt,c,1,1\nt,b,0,")  # b, c: unfinished
    assert run.drop_orphan_rows("curves.csv", main="main.csv", key=("task", "spec", "seed")) == 2
    assert side.read_text() == "task,spec,seed,step\nt,a,0,1\nt,a,0,2\n"
    assert run.drop_orphan_rows("curves.csv", main="main.csv", key=("task", "spec", "seed")) == 0
    assert run.drop_orphan_rows("missing.csv", main="main.csv", key=("task",)) == 0
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_plugin_file_given_relative_resumes_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch_registry: None
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "myplug.py").write_text(
        "from attnbench import register_attention\n"
        "from attnbench.variants.full import NaiveSoftmaxAttention\n"
        "register_attention('myplug-test')(type('MyPlug', (NaiveSoftmaxAttention,), {}))\n"
    )
    monkeypatch.chdir(work)
    _run(["--plugin", "myplug.py", "bench", "complexity", "--variant", "myplug-test", *TINY, "--pass", "fwd",
          "--out", "run", "--max-cells", "1"])  # fmt: skip
    out = work / "run"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["plugins"]["files_and_modules"] == [str(work.resolve() / "myplug.py")]
    assert manifest["complexity"]["plugins"] == [str(work.resolve() / "myplug.py")]

    registry._loaded_plugins.clear()  # as a fresh process would start
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    refused = runner.invoke(app, ["bench", "complexity", "--resume", str(out)])  # its plugin is not imported unasked
    assert refused.exit_code == 2 and "--trust-plugins" in refused.output and "myplug.py" in refused.output
    _run(["bench", "complexity", "--resume", str(out), "--trust-plugins"])
    rows = pd.read_csv(out / "complexity.csv")
    assert len(rows) == 2 and set(rows["status"]) == {"ok"}


def _manifest_run(tmp_path: Path, complexity: dict[str, object]) -> Path:
    run = RunDir.create("complexity", out=tmp_path / "run")
    run.write_manifest({"schema_version": SCHEMA_VERSION, "complexity": complexity, "sessions": []})
    return run.path


def test_resume_compares_list_options_as_sets_and_the_budget_as_given(tmp_path: Path) -> None:
    path = _manifest_run(tmp_path, {
        "variants": ["softmax", "window"], "seq_lens": [32, 64], "passes": ["fwd", "fwd+bwd"],
        "memory_budget": "75%", "memory_budget_bytes": 12_345_678, "heads": 2,
    })  # fmt: skip
    same = {"variants": ["window", "softmax"], "seq_lens": [64, 32], "passes": ["fwd+bwd", "fwd"],
            "memory_budget": "75%", "heads": 2}  # fmt: skip
    open_for_resume(path, "complexity", same)
    with pytest.raises(UserError, match=r"memory_budget='8GiB' \(the run has '75%'\)"):
        open_for_resume(path, "complexity", same | {"memory_budget": "8GiB"})
    with pytest.raises(UserError, match=r"passes=\['fwd'\]"):
        open_for_resume(path, "complexity", same | {"passes": ["fwd"]})
    with pytest.raises(UserError, match=r"variants="):
        open_for_resume(path, "complexity", same | {"variants": ["softmax", "window", "bigbird"]})


def test_resume_through_the_cli_with_the_default_budget_and_a_plugin_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch_registry: None
) -> None:
    plugin = tmp_path / "other.py"
    plugin.write_text(
        "from attnbench import register_attention\n"
        "from attnbench.variants.full import NaiveSoftmaxAttention\n"
        "register_attention('other-test')(type('Other', (NaiveSoftmaxAttention,), {}))\n"
    )
    out = tmp_path / "run"
    _run(["--plugin", str(plugin), "bench", "complexity", "--variant", "other-test", *TINY, "--pass", "fwd",
          "--out", str(out), "--max-cells", "1"])  # fmt: skip
    registry._loaded_plugins.clear()  # a fresh process: the plugin variant is known only from the run's manifest
    registry.ATTENTION._classes.pop("other-test")
    for module in [m for m in sys.modules if m.startswith("attnbench_plugin_other_")]:
        del sys.modules[module]
    # "75%" is a share of today's free memory: the same option even if the free memory moved since
    _run(["bench", "complexity", "--resume", str(out), "--variant", "other-test", "--memory-budget", "75%",
          "--trust-plugins"])  # fmt: skip
    rows = pd.read_csv(out / "complexity.csv")
    assert list(rows["spec"]) == ["other-test", "other-test"] and set(rows["status"]) == {"ok"}
