"""One writer per run directory, with the faults injected for real: a second process, a resume while running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.core.errors import UserError
from attnbench.runs.rundir import RunDir, write_json_atomic

runner = CliRunner()
TINY = ["--variant", "softmax", "--seq-len", "16", "--pass", "fwd", "--heads", "1", "--head-dim", "8",
        "--min-run-time", "0.01", "--threads", "1"]  # fmt: skip
# a process that makes a run directory and holds it (as a sweep would) until it is killed
HOLDER = """
import sys, time
from pathlib import Path
from attnbench.runs.session import new_run
run = new_run("complexity", sections={"complexity": {}}, device="cpu", threads=1, out=Path(sys.argv[1]))
print("ready", flush=True)
time.sleep(60)
"""


def _attnbench(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "attnbench", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def held_run(tmp_path: Path) -> tuple[Path, subprocess.Popen[str]]:
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    yield out, holder
    holder.kill()
    holder.wait()


def test_a_second_writer_is_refused_naming_the_holder(held_run: tuple[Path, subprocess.Popen[str]]) -> None:
    out, holder = held_run
    with pytest.raises(UserError, match=f"in use by PID {holder.pid} on "):
        RunDir.create("complexity", out=out)
    resumed = runner.invoke(app, ["bench", "complexity", "--resume", str(out)])  # while the first still runs
    assert resumed.exit_code == 2
    assert resumed.output.count("\n") == 1 and f"PID {holder.pid}" in resumed.output, resumed.output
    holder.kill()  # the kernel drops the lock with its holder: no stale lock survives a kill -9
    holder.wait()
    assert RunDir.existing(out).lock_for_writing().lock.held


def test_two_sweeps_on_one_out_exactly_one_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first, second = (_attnbench("bench", "complexity", *TINY, "--out", str(out)) for _ in range(2))
    results = [(p.wait(timeout=120), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert refused.startswith("error: ") and refused.count("\n") == 1 and "Traceback" not in refused
    assert "in use by PID" in refused or "not empty" in refused
    lines = (out / "complexity.csv").read_text().splitlines()
    assert sum(line.startswith("spec,") for line in lines) == 1  # one header
    rows = pd.read_csv(out / "complexity.csv")
    assert len(rows) == 1 and not rows.duplicated(["spec", "scope", "pass", "seq_len"]).any()
    assert [s["status"] for s in json.loads((out / "manifest.json").read_text())["sessions"]] == ["complete"]


def test_manifest_writers_never_share_a_temporary_file(tmp_path: Path) -> None:
    target, errors = tmp_path / "manifest.json", []

    def write(i: int) -> None:
        try:
            for j in range(40):
                write_json_atomic(target, {"writer": i, "n": j})
        except OSError as err:  # with one shared .tmp name, one writer renames the other's file away
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and json.loads(target.read_text())["n"] == 39
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_sigterm_stops_the_sweep_like_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "run"
    sweep = _attnbench("bench", "complexity", *TINY, "--out", str(out))
    deadline = time.monotonic() + 60
    while not (out / "manifest.json").exists() or '"running"' not in (out / "manifest.json").read_text():
        assert time.monotonic() < deadline and sweep.poll() is None, sweep.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # its first worker (the machine's matmul peak) is running now
    os.kill(sweep.pid, signal.SIGTERM)
    code = sweep.wait(timeout=30)
    _, err = sweep.communicate()
    assert code == 130 and "Traceback" not in err and "--resume" in err, err
    assert [s["status"] for s in json.loads((out / "manifest.json").read_text())["sessions"]] == ["interrupted"]
