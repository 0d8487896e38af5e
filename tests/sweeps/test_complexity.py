"""`attnbench bench complexity` end to end: schema, budgets and failures, resume, plugins in workers, memory."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.execution.local import LocalExecutor
from attnbench.execution.protocol import run_one
from attnbench.measure.cells import CellSpec, MemoryCell
from attnbench.measure.memory import memory_cell
from attnbench.runs.schema import COMPLEXITY_COLUMNS, COMPLEXITY_RAW_COLUMNS
from attnbench.sweeps.complexity import cell_flops

runner = CliRunner()
TINY = ["--seq-len", "32..64", "--heads", "2", "--head-dim", "8", "--min-run-time", "0.01", "--threads", "1"]

FAULTY_PLUGIN = textwrap.dedent(
    """
    import os, signal, time
    from attnbench import register_attention
    from attnbench.variants.full import SoftmaxAttention

    @register_attention("raises-test")
    class Raises(SoftmaxAttention):
        def forward(self, q, k, v, *, causal=False, key_mask=None):
            raise RuntimeError("deliberate failure in forward")

    @register_attention("oom-test")
    class OutOfMemory(SoftmaxAttention):
        def forward(self, q, k, v, *, causal=False, key_mask=None):
            if q.shape[-2] > 32:
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB")
            return super().forward(q, k, v, causal=causal, key_mask=key_mask)

    @register_attention("killed-test")
    class Killed(SoftmaxAttention):
        def forward(self, q, k, v, *, causal=False, key_mask=None):
            os.kill(os.getpid(), signal.SIGKILL)

    @register_attention("sleeps-test")
    class Sleeps(SoftmaxAttention):
        def forward(self, q, k, v, *, causal=False, key_mask=None):
            time.sleep(60)
    """
)


def _run(args: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, args)
    return result.exit_code, result.output


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "complexity.csv")


def test_sweep_writes_the_schema_and_a_manifest(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = _run(["bench", "complexity", "--variant", "softmax", "--variant", "softmax-naive", *TINY,
                         "--out", str(out)])  # fmt: skip
    assert code == 0, output
    rows = _rows(out)
    assert tuple(rows.columns) == COMPLEXITY_COLUMNS
    assert len(rows) == 2 * 2 * 2  # variants × lengths × passes
    assert set(rows["status"]) == {"ok"}
    assert (rows["time_median_s"] > 0).all() and (rows["peak_mem_bytes"] >= 0).all()
    assert (rows["flops"] > 0).all() and (rows["gflops_per_s"] > 0).all() and (rows["peak_fraction"] > 0).all()
    raw = pd.read_csv(out / "complexity_raw.csv")
    assert tuple(raw.columns) == COMPLEXITY_RAW_COLUMNS
    assert set(raw["spec"]) == {"softmax", "softmax-naive"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["machine"]["matmul_peak_gflops"] > 0
    assert manifest["machine"]["memory_bandwidth_gbs"] > 0
    assert manifest["environment"]["torch"] == torch.__version__
    assert manifest["complexity"]["variants"] == ["softmax", "softmax-naive"]
    assert manifest["sessions"][-1]["status"] == "complete"
    assert "scaling exponents" in output and "softmax-naive" in output


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path: Path, scratch_registry: None) -> None:
    plugin = tmp_path / "faulty.py"
    plugin.write_text(FAULTY_PLUGIN)
    out = tmp_path / "run"
    variants = ["softmax", "raises-test", "oom-test", "killed-test", "sleeps-test"]
    code, output = _run(["--plugin", str(plugin), "bench", "complexity",
                         *(a for v in variants for a in ("--variant", v)), *TINY, "--pass", "fwd",
                         "--time-budget", "3", "--out", str(out)])  # fmt: skip
    assert code == 0, output
    rows = _rows(out).set_index(["spec", "seq_len"])
    assert rows.loc[("softmax", 64), "status"] == "ok", rows[["status", "message"]].to_string()
    assert rows.loc[("raises-test", 32), "status"] == "error"
    assert "deliberate failure in forward" in rows.loc[("raises-test", 32), "message"]
    assert rows.loc[("oom-test", 32), "status"] == "ok"
    assert rows.loc[("oom-test", 64), "status"] == "oom"
    assert rows.loc[("killed-test", 32), "status"] == "oom"
    assert "SIGKILL" in rows.loc[("killed-test", 32), "message"]
    assert rows.loc[("sleeps-test", 32), "status"] == "timeout"
    for spec in ("raises-test", "killed-test", "sleeps-test"):  # failed at 32: larger n are not attempted
        assert rows.loc[(spec, 64), "status"] == "skipped"
        assert "at n=32" in rows.loc[(spec, 64), "message"]


def test_a_tiny_memory_budget_skips_cells_without_running_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = _run(["bench", "complexity", "--variant", "softmax-naive", "--variant", "softmax",
                         "--seq-len", "32", "--seq-len", "1024", "--heads", "2", "--head-dim", "8",
                         "--min-run-time", "0.01", "--memory-budget", "2MiB", "--out", str(out)])  # fmt: skip
    assert code == 0, output
    rows = _rows(out).set_index(["spec", "seq_len", "pass"])
    assert len(rows) == 8  # a complete table
    skipped = rows.loc[("softmax-naive", 1024, "fwd")]
    assert skipped["status"] == "skipped" and "exceeds the memory budget" in skipped["message"]
    assert pd.isna(skipped["time_median_s"])
    assert rows.loc[("softmax", 1024, "fwd"), "status"] == "ok"


def test_resume_finishes_exactly_the_missing_cells(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["bench", "complexity", "--variant", "softmax", "--variant", "softmax-naive", *TINY]
    code, output = _run([*args, "--out", str(out), "--max-cells", "3"])
    assert code == 0, output
    assert len(_rows(out)) == 3
    with (out / "complexity.csv").open("a") as f:
        f.write("softmax-naive,softmax-naive,full,attention,fw")  # a row torn by a kill
    code, output = _run(["bench", "complexity", "--resume", str(out), "--seq-len", "32..64"])
    assert code == 0, output
    rows = _rows(out)
    assert len(rows) == 8
    assert not rows.duplicated(["spec", "scope", "pass", "seq_len"]).any()
    # --max-cells stopped the first session with cells left: it is not complete
    assert [s["status"] for s in json.loads((out / "manifest.json").read_text())["sessions"]] == [
        "interrupted", "complete"
    ]  # fmt: skip


def test_resume_refuses_conflicting_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, _ = _run(["bench", "complexity", "--variant", "softmax", *TINY, "--out", str(out), "--max-cells", "1"])
    assert code == 0
    code, output = _run(["bench", "complexity", "--resume", str(out), "--heads", "4"])
    assert code == 2
    assert "conflict" in output and "heads=4 (the run has 2)" in output
    code, output = _run(["bench", "complexity", "--resume", str(tmp_path / "missing")])
    assert code == 2 and "does not exist" in output


def test_sigint_stops_the_run_and_resume_completes_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["bench", "complexity", "--variant", "softmax", "--variant", "softmax-naive", "--seq-len", "32..512",
            "--heads", "2", "--head-dim", "8", "--threads", "1", "--min-run-time", "0.3"]  # fmt: skip
    # a job started in the background by a non-interactive shell (CI, nohup … &) inherits SIGINT ignored, and
    # Python keeps an ignored SIGINT ignored: give the run Ctrl-C back, as a terminal user has it
    proc = subprocess.Popen([sys.executable, "-m", "attnbench", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    csv_path = out / "complexity.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not csv_path.exists() or len(csv_path.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sessions"][-1]["status"] == "interrupted"
    partial = len(_rows(out))
    assert 2 <= partial < 20
    code, output = _run(["bench", "complexity", "--resume", str(out), "--min-run-time", "0.3"])
    assert code == 0, output
    rows = _rows(out)
    assert len(rows) == 20 and not rows.duplicated(["spec", "pass", "seq_len"]).any()


def test_a_plugin_file_variant_is_measured_in_the_workers(tmp_path: Path, scratch_registry: None) -> None:
    plugin = tmp_path / "mine.py"
    plugin.write_text(
        "from attnbench import register_attention\n"
        "from attnbench.variants.full import NaiveSoftmaxAttention\n"
        "register_attention('mine-test')(type('Mine', (NaiveSoftmaxAttention,), {}))\n"
    )
    out = tmp_path / "run"
    code, output = _run(["--plugin", str(plugin), "bench", "complexity", "--variant", "mine-test", *TINY,
                         "--out", str(out)])  # fmt: skip
    assert code == 0, output
    rows = _rows(out)
    assert set(rows["status"]) == {"ok"} and set(rows["spec"]) == {"mine-test"}
    assert json.loads((out / "manifest.json").read_text())["plugins"]["files_and_modules"] == [str(plugin.resolve())]


def _peak(executor: LocalExecutor, spec: str, n: int) -> int:
    cell = CellSpec(spec=spec, scope="attention", pass_="fwd", batch=1, heads=2, head_dim=16, seq_len=n,
                    causal=False, dtype="float32", device="cpu", threads=1)  # fmt: skip
    outcome = run_one(executor, memory_cell, MemoryCell(cell), timeout_s=120)
    assert outcome.status == "ok", outcome.message
    return outcome.result.peak_mem_bytes


def test_measured_memory_grows_quadratically_for_naive_and_not_for_sdpa() -> None:
    executor = LocalExecutor()
    naive = [_peak(executor, "softmax-naive", n) for n in (1024, 2048, 4096)]
    for n, peak in zip((1024, 2048, 4096), naive, strict=True):
        assert peak >= 1 * 2 * n * n * 4  # at least the batch·heads·n² fp32 scores
    for small, large in itertools.pairwise(naive):
        assert 3.0 < large / small < 5.0
    sdpa = [_peak(executor, "softmax", n) for n in (1024, 2048, 4096)]
    for small, large in itertools.pairwise(sdpa):
        assert large / small < 3.0
    assert sdpa[-1] < naive[-1] / 10


def test_softmax_flops_are_4bhn2d_and_agree_with_flop_counter_mode() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from attnbench import create_attention

    cell = CellSpec(spec="softmax", scope="attention", pass_="fwd", batch=2, heads=4, head_dim=32, seq_len=256,
                    causal=False, dtype="float32", device="cpu", threads=1)  # fmt: skip
    assert cell_flops(cell) == 4 * 2 * 4 * 256**2 * 32
    q = torch.randn(2, 4, 256, 32)
    counted = {}
    for name in ("softmax", "softmax-naive"):
        with FlopCounterMode(display=False) as counter:
            create_attention(name, head_dim=32, num_heads=4)(q, q, q)
        counted[name] = counter.get_total_flops()
    assert counted["softmax-naive"] == cell_flops(cell)  # the same maths, as explicit matmuls
    if counted["softmax"]:  # FlopCounterMode has no formula for the CPU flash kernel; where it has, they agree
        assert counted["softmax"] == cell_flops(cell)
    backward = CellSpec(**{**cell.to_dict(), "pass_": "fwd+bwd"})
    assert cell_flops(backward) == 3 * cell_flops(cell)


def test_default_variants_leave_out_what_cannot_run_here() -> None:
    from attnbench.core.registry import attention_class
    from attnbench.sweeps.complexity import default_variants

    both = default_variants(causal=False, device="cpu")
    assert {"softmax", "softmax-naive", "window", "linear"} <= set(both)
    if "flex-window" in __import__("attnbench").available_attention():
        assert "flex-window" not in both  # forward-only on CPU: not in a sweep that asks for backward
        assert "flex-window" in default_variants(causal=False, device="cpu", passes=["fwd"])
        reason = attention_class("flex-window").unsupported_reason(device="cpu", backward=True, causal=False)
        assert reason is not None and "forward-only" in reason
        assert attention_class("flex-window").unsupported_reason(device="cuda", backward=True, causal=True) is None


def test_an_unsupported_cell_is_skipped_without_a_worker(tmp_path: Path, scratch_registry: None) -> None:
    plugin = tmp_path / "fwd_only.py"
    plugin.write_text(
        "from attnbench import register_attention\n"
        "from attnbench.variants.full import SoftmaxAttention\n"
        "@register_attention('fwd-only-test')\n"
        "class ForwardOnly(SoftmaxAttention):\n"
        "    @classmethod\n"
        "    def unsupported_reason(cls, *, device, backward, causal):\n"
        "        return 'no backward in this test' if backward else None\n"
        "    def forward(self, q, k, v, *, causal=False, key_mask=None):\n"
        "        if q.requires_grad:\n"
        "            raise AssertionError('a worker ran a cell that was declared unsupported')\n"
        "        return super().forward(q, k, v, causal=causal, key_mask=key_mask)\n"
    )
    out = tmp_path / "run"
    code, output = _run(["--plugin", str(plugin), "bench", "complexity", "--variant", "fwd-only-test", *TINY,
                         "--out", str(out)])  # fmt: skip
    assert code == 0, output
    rows = _rows(out).set_index(["pass", "seq_len"])
    assert (rows.loc["fwd", "status"] == "ok").all()
    assert (rows.loc["fwd+bwd", "status"] == "skipped").all()
    assert rows.loc[("fwd+bwd", 32), "message"] == "not supported here: no backward in this test"
