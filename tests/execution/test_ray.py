"""RayExecutor on a real local Ray instance (one per session: Ray takes several seconds to start)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.execution.local import LocalExecutor
from attnbench.execution.protocol import Outcome
from attnbench.measure.cells import CellSpec
from attnbench.measure.timing import time_cell
from attnbench.runs.rundir import RunDir
from attnbench.runs.schema import ACCURACY_COLUMNS, ACCURACY_CSV, COMPLEXITY_COLUMNS, COMPLEXITY_CSV
from attnbench.sweeps.complexity import ComplexityConfig, cell_key, run_sweep
from tests.execution.ray_cells import KillOnce, Nap, kill_worker_once, nap

ray = pytest.importorskip("ray")
from attnbench.execution.ray_executor import RayExecutor, runtime_env  # noqa: E402 (needs ray, checked above)

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
SMALL = ["--variant", "softmax", "--variant", "window", "--seq-len", "32", "--pass", "fwd", "--pass", "fwd+bwd",
         "--heads", "2", "--head-dim", "8", "--threads", "1", "--min-run-time", "0.01"]  # fmt: skip
TINY_TRAINING = ["--task", "mqar", "--variant", "softmax", "--seed", "0", "--seed", "1", "--steps", "2",
                 "--seq-len", "32", "--d-model", "16", "--layers", "1", "--heads", "2", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="session")
def shared() -> Iterator[RayExecutor]:
    """One Ray instance and one executor (one actor, one forkserver) for every test: each costs seconds to start."""
    env = runtime_env(())
    env["env_vars"] = {"PYTHONPATH": str(REPO)}  # the actors import the cells of tests/execution/ray_cells.py
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error", runtime_env=env)
    executor = RayExecutor(retries=1)
    yield executor
    executor.close()
    ray.shutdown()


@pytest.fixture
def ray_executor(shared: RayExecutor, monkeypatch: pytest.MonkeyPatch) -> RayExecutor:
    """The shared executor, also what `--executor ray` builds; the commands' close() leaves it running."""
    monkeypatch.setattr(shared, "close", lambda: None)
    monkeypatch.setattr("attnbench.execution.ray_executor.RayExecutor", lambda *args, **kwargs: shared)
    return shared


def _invoke(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def test_both_executors_give_the_same_cells_and_schema(tmp_path: Path, ray_executor: RayExecutor) -> None:
    for executor in ("local", "ray"):
        _invoke(["bench", "complexity", *SMALL, "--executor", executor, "--out", str(tmp_path / f"c-{executor}")])
        _invoke(["bench", "accuracy", *TINY_TRAINING, "--executor", executor, "--out", str(tmp_path / f"a-{executor}")])
    for name, columns, key in ((COMPLEXITY_CSV, COMPLEXITY_COLUMNS, ["spec", "scope", "pass", "seq_len"]),
                               (ACCURACY_CSV, ACCURACY_COLUMNS, ["task", "spec", "seed", "seq_len"])):  # fmt: skip
        prefix = "c" if name == COMPLEXITY_CSV else "a"
        local = pd.read_csv(tmp_path / f"{prefix}-local" / name)
        remote = pd.read_csv(tmp_path / f"{prefix}-ray" / name)
        assert list(local.columns) == list(remote.columns) == list(columns)
        assert set(map(tuple, local[key].values.tolist())) == set(map(tuple, remote[key].values.tolist()))
        assert len(remote) == len(local) == (4 if prefix == "c" else 2)
        assert set(remote["status"]) == {"ok"}, remote["message"].tolist()
        assert remote["node"].notna().all()
    manifest = RunDir.existing(tmp_path / "c-ray").read_manifest()
    assert manifest["executor"]["kind"] == "ray"
    node = pd.read_csv(tmp_path / "c-ray" / COMPLEXITY_CSV)["node"].iloc[0]
    assert manifest["executor"]["nodes"][node]["cpu_model"]
    assert manifest["machine"]["node_peaks_gflops"][node] > 0


def test_a_ray_run_interrupted_and_resumed_has_each_cell_once(tmp_path: Path, ray_executor: RayExecutor) -> None:
    config = ComplexityConfig(variants=["softmax", "window"], seq_lens=[32, 64], passes=["fwd"], heads=2, head_dim=8,
                              threads=1, min_run_time=0.01, max_run_time=0.02)  # fmt: skip
    run_dir = RunDir.create("complexity", out=tmp_path / "run")
    assert run_sweep(config, run_dir, ray_executor, machine_peak_gflops=None, max_cells=2) == 2
    assert len(run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS)) == 2
    run_sweep(config, run_dir, ray_executor, machine_peak_gflops=None, max_cells=1)  # resumed on Ray
    run_sweep(config, run_dir, LocalExecutor(), machine_peak_gflops=None)  # and locally
    keys = [cell_key(r) for _, r in run_dir.rows(COMPLEXITY_CSV, COMPLEXITY_COLUMNS).iterrows()]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 4


def _overlap(a: Outcome, b: Outcome) -> bool:
    return a.started_at < b.ended_at and b.started_at < a.ended_at


def test_measuring_cells_hold_their_node_alone(ray_executor: RayExecutor) -> None:
    executor = ray_executor
    measuring = CellSpec(
        spec="softmax",
        scope="attention",
        pass_="fwd",
        batch=1,
        heads=2,
        head_dim=8,
        seq_len=32,
        causal=False,
        dtype="float32",
        device="cpu",
        threads=1,
        min_run_time=0.1,
        max_run_time=0.3,
    )
    for i in range(3):  # interleaved: sharing cells queue up around every measuring cell
        executor.submit(nap, Nap(0.5), timeout_s=60, tag=("nap", 2 * i))
        executor.submit(nap, Nap(0.5), timeout_s=60, tag=("nap", 2 * i + 1))
        executor.submit(time_cell, measuring, timeout_s=60, tag=("time", i))
        executor.submit(nap, Nap(0.3, shares_node=False), timeout_s=60, tag=("alone", i))
    outcomes = [o for o in executor.outcomes() if isinstance(o, Outcome)]
    assert len(outcomes) == 12 and {o.status for o in outcomes} == {"ok"}, [o.message for o in outcomes]
    alone = [o for o in outcomes if o.tag[0] != "nap"]
    for a in alone:
        others = [o for o in outcomes if o is not a and o.node == a.node]
        assert not any(_overlap(a, o) for o in others), a.tag
    naps = [o for o in outcomes if o.tag[0] == "nap"]  # the check could fail: sharing cells do run side by side
    assert any(_overlap(a, b) for a in naps for b in naps if a is not b and a.node == b.node)


def test_a_cell_whose_worker_dies_is_run_again_then_recorded(
    tmp_path: Path, ray_executor: RayExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = ray_executor  # last in this file: it replaces the shared actor
    executor.submit(kill_worker_once, KillOnce(str(tmp_path / "once")), timeout_s=60, tag="retried")
    retried = next(o for o in executor.outcomes() if isinstance(o, Outcome))
    assert retried.status == "ok" and retried.result == "survived"  # killed once, retried once
    monkeypatch.setattr(executor, "retries", 0)
    executor.submit(kill_worker_once, KillOnce(str(tmp_path / "twice")), timeout_s=60, tag="lost")
    executor.submit(nap, Nap(0.1), timeout_s=60, tag="after")
    outcomes = {o.tag: o for o in executor.outcomes() if isinstance(o, Outcome)}
    assert outcomes["lost"].status == "error" and "lost its worker" in outcomes["lost"].message
    assert outcomes["after"].status == "ok"  # the sweep goes on with a new worker
