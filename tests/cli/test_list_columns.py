"""`attnbench list` shows whether each variant runs non-causally and whether it can decode step by step."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.core.registry import attention_class

runner = CliRunner()


def test_list_json_carries_noncausal_and_decode_from_the_class() -> None:
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    records = {r["name"]: r for r in json.loads(result.output)}
    for name, record in records.items():
        cls = attention_class(name)
        assert record["noncausal"] is cls.supports_noncausal, name
        assert record["decode"] is cls.supports_decode, name
    assert any(not r["noncausal"] for r in records.values()), "some built-in is causal-only"
    assert records["softmax"]["noncausal"] and records["softmax"]["decode"]


def test_list_table_has_the_columns() -> None:
    result = runner.invoke(app, ["list", "--family", "full"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "family" in line)
    assert "noncausal" in header and "decode" in header
