"""Faulty plugin variants end as their cells' `error` rows, wherever their code runs; the sweep goes on."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnbench.cli import app

runner = CliRunner()
FAULTY = textwrap.dedent(
    """
    import math
    import torch
    from attnbench import register_attention
    from attnbench.variants.full import SoftmaxAttention

    @register_attention("nan-test")
    class ReturnsNaN(SoftmaxAttention):
        exact = False  # so its error against softmax is measured too: a nan error is not ok
        def forward(self, q, k, v, **kw):
            return torch.full_like(q, math.nan)

    @register_attention("shape-test")
    class WrongShape(SoftmaxAttention):
        def forward(self, q, k, v, **kw):
            return super().forward(q, k, v, **kw)[..., :4]

    @register_attention("none-test")
    class ReturnsNone(SoftmaxAttention):
        def forward(self, q, k, v, **kw):
            return None

    @register_attention("flops-test")
    class RaisingFlops(SoftmaxAttention):
        def flops(self, **kw):
            raise ZeroDivisionError("flops model divides by zero")

    @register_attention("reason-test")
    class RaisingReason(SoftmaxAttention):
        @classmethod
        def unsupported_reason(cls, **kw):
            raise KeyError("no such device table")

    built = [0]

    @register_attention("ctor-test")
    class FlakyConstructor(SoftmaxAttention):
        def __init__(self, **kw):
            built[0] += 1
            if built[0] % 2 == 0:  # the up-front build passes; the sweep's own (in the parent) fails
                raise RuntimeError("constructor failed on its second call")
            super().__init__(**kw)
    """
)
VARIANTS = ["softmax", "nan-test", "shape-test", "none-test", "flops-test", "reason-test", "ctor-test"]
TINY = ["--seq-len", "16", "--pass", "fwd", "--heads", "2", "--head-dim", "8", "--min-run-time", "0.01",
        "--threads", "1"]  # fmt: skip


def test_faulty_plugins_are_error_rows_and_the_run_can_finish(tmp_path: Path, scratch_registry: None) -> None:
    plugin = tmp_path / "faulty.py"
    plugin.write_text(FAULTY)
    out = tmp_path / "run"
    variants = [arg for v in VARIANTS for arg in ("--variant", v)]
    result = runner.invoke(app, ["--plugin", str(plugin), "bench", "complexity", *variants, *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "complexity.csv").set_index("spec")
    assert rows.loc["softmax", "status"] == "ok"
    messages = {
        "nan-test": "output has NaN",
        "shape-test": "output shape (1, 2, 16, 4), expected (1, 2, 16, 8)",
        "none-test": "output is NoneType, not a tensor",
        "flops-test": "in the parent: flops-test: flops() raised ZeroDivisionError: flops model divides by zero",
        "reason-test": "in the parent: reason-test: unsupported_reason() raised KeyError",
        "ctor-test": "in the parent: ctor-test: the constructor raised RuntimeError: constructor failed",
    }
    for spec, message in messages.items():
        assert rows.loc[spec, "status"] == "error" and message in rows.loc[spec, "message"], (spec, rows.loc[spec])
    approximation = pd.read_csv(out / "approximation.csv").set_index("spec")
    assert approximation.loc["nan-test", "status"] == "error"
    assert "output has NaN" in approximation.loc["nan-test", "message"]

    resumed = runner.invoke(app, ["--plugin", str(plugin), "bench", "complexity", "--resume", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert [s["status"] for s in json.loads((out / "manifest.json").read_text())["sessions"]] == ["complete"] * 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "complexity", "--time-budget", "inf"], "--time-budget must be a positive, finite"),
        (["bench", "complexity", "--time-budget", "nan"], "--time-budget must be a positive, finite"),
        (["bench", "complexity", "--variant", "linformer:k=0"], "--variant linformer:k=0"),
        (["bench", "accuracy", "--task", "mqar", "--seed", "-1"], "seed must be in [0, 2**64)"),
        (["bench", "accuracy", "--task", "mqar", "--seed", str(2**64)], "seed must be in [0, 2**64)"),
        (["bench", "accuracy", "--task", "mqar", "--heads", "3", "--d-model", "32"], "not divisible by heads=3"),
        (["bench", "accuracy", "--task", "mqar", "--lr", "inf"], "lr must be > 0 and finite"),
        (["bench", "accuracy", "--task", "mqar", "--variant", "linformer:k=0"], "linformer:k=0"),
    ],
)
def test_mistakes_are_refused_before_the_run_directory_exists(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("body", "said"), [("import sys\nsys.exit(3)\n", "called sys.exit(3) at import"), ("1 / 0\n", "ZeroDivisionError")]
)
def test_a_plugin_that_exits_or_raises_at_import_is_named(
    body: str, said: str, tmp_path: Path, scratch_registry: None
) -> None:
    plugin = tmp_path / "broken.py"
    plugin.write_text(body)
    result = runner.invoke(app, ["--plugin", str(plugin), "list"])
    assert result.exit_code == 2 and "broken.py" in result.output and said in result.output, result.output
