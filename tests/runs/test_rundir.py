import json
from pathlib import Path

import pytest

from attnbench.core.errors import UserError
from attnbench.runs.rundir import CsvAppender, RunDir, conflicting_options, read_rows, write_json_atomic
from attnbench.sweeps.options import parse_bytes, parse_lengths


def test_appender_writes_header_once_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    CsvAppender(path, ("a", "b")).append({"a": 1, "b": 0.5})
    CsvAppender(path, ("a", "b")).append({"a": 2, "b": None})
    assert path.read_text() == "a,b\n1,0.5\n2,\n"
    with pytest.raises(ValueError, match=r"not in rows\.csv"):
        CsvAppender(path, ("a", "b")).append({"c": 1})


def test_a_torn_last_line_is_dropped_on_read_and_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n3,")
    assert read_rows(path).to_dict("records") == [{"a": 1, "b": 2}]
    CsvAppender(path, ("a", "b")).append({"a": 5, "b": 6})
    assert path.read_text() == "a,b\n1,2\n5,6\n"


def test_a_file_of_another_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(UserError, match="another schema version"):
        CsvAppender(path, ("a", "b"))
    with pytest.raises(UserError, match="missing columns a, b"):
        read_rows(path, ("a", "b"))


def test_run_directories_are_never_reused(tmp_path: Path) -> None:
    first = RunDir.create("complexity", root=tmp_path)
    second = RunDir.create("complexity", root=tmp_path)
    assert first.path != second.path and first.path.name.endswith("-complexity")
    out = tmp_path / "mine"
    RunDir.create("x", out=out)
    (out / "manifest.json").write_text("{}")
    with pytest.raises(UserError, match=r"already exists and is not empty.*--resume"):
        RunDir.create("x", out=out)
    with pytest.raises(UserError, match="does not exist"):
        RunDir.existing(tmp_path / "nope")
    with pytest.raises(UserError, match="not an attnbench run directory"):
        RunDir.existing(first.path)


def test_manifest_writes_are_atomic_and_sessions_recorded(tmp_path: Path) -> None:
    run = RunDir.create("x", root=tmp_path)
    run.write_manifest({"schema_version": 1})
    index = run.begin_session(["attnbench", "x"])
    run.end_session(index, "complete")
    manifest = json.loads(run.manifest_path.read_text())
    assert manifest["sessions"][0]["status"] == "complete" and manifest["sessions"][0]["end"]
    write_json_atomic(tmp_path / "m.json", {"a": 1})
    assert not list(tmp_path.glob(".*.tmp"))


def test_parse_lengths_ranges_and_values() -> None:
    assert parse_lengths(["256..2048"]) == [256, 512, 1024, 2048]
    assert parse_lengths(["256..1000", "3000", "512"]) == [256, 512, 3000]
    assert parse_lengths(["64,128"]) == [64, 128]
    for bad, message in (("a..b", "not an integer"), ("512..256", "ends below"), ("0", ">= 1")):
        with pytest.raises(UserError, match=message):
            parse_lengths([bad])


def test_parse_bytes() -> None:
    assert parse_bytes("75%", available=1000) == 750
    assert parse_bytes("8GiB", available=0) == 8 * 2**30
    assert parse_bytes("500MB", available=0) == 500_000_000
    assert parse_bytes("1024", available=0) == 1024
    for bad in ("lots", "150%", "5 parsecs"):
        with pytest.raises(UserError, match="--memory-budget"):
            parse_bytes(bad, available=1000)


def test_conflicting_options_ignore_order_in_list_options() -> None:
    stored = {"variants": ["a", "b"], "passes": ["fwd", "fwd+bwd"], "heads": 2, "memory_budget": None}
    assert conflicting_options(stored, {"variants": ["b", "a"], "passes": ["fwd+bwd", "fwd"], "heads": None}) == []
    assert conflicting_options(stored, {"memory_budget": "75%"}) == []  # an older run did not record it
    assert conflicting_options(stored, {"variants": ["a"], "heads": 4}) == [
        "variants=['a'] (the run has ['a', 'b'])", "heads=4 (the run has 2)"
    ]  # fmt: skip
