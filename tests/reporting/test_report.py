"""report.md and plots/ from a synthetic results directory; the recommendation rule on known numbers.

The synthetic run (also used by test_plots and test_compare) has exact power laws, so every expected pick
can be worked out by hand:

- time (fwd): softmax 1e-9·n², window 2e-8·n, linear 1e-8·n, performer 4e-8·n, taylor 3e-8·n; fwd+bwd = 3×.
- memory (fwd): softmax 8·n², window 3000·n, linear 2000·n, performer 5000·n, taylor 4000·n bytes.
- softmax is oom at 4096 and 8192, window oom at 8192, performer skipped at 8192; taylor's fwd cell at 8192
  was never run (missing).
- accuracy vs softmax: window within 2.5 points, linear 36 points below, performer diverged on every
  seed, taylor never trained.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from attnbench.core.errors import UserError
from attnbench.reporting.analysis import accuracy_spread, accuracy_verdicts, recommendations
from attnbench.reporting.report import header_section, partial_notes, write_report
from attnbench.runs.loading import load_run
from attnbench.runs.rundir import CsvAppender, write_json_atomic
from attnbench.runs.schema import ACCURACY_COLUMNS, APPROXIMATION_COLUMNS, BY_DISTANCE_COLUMNS, COMPLEXITY_COLUMNS

LENGTHS = (256, 512, 1024, 2048, 4096, 8192)
WINDOW = "window:radius=64"
MODELS: dict[str, tuple[str, str, Callable[[int], float], Callable[[int], float]]] = {
    "softmax": ("softmax", "full", lambda n: 1e-9 * n**2, lambda n: 8.0 * n**2),
    WINDOW: ("window", "sparse", lambda n: 2e-8 * n, lambda n: 3000.0 * n),
    "linear": ("linear", "linear", lambda n: 1e-8 * n, lambda n: 2000.0 * n),
    "performer": ("performer", "linear", lambda n: 4e-8 * n, lambda n: 5000.0 * n),
    "taylor": ("taylor", "linear", lambda n: 3e-8 * n, lambda n: 4000.0 * n),
}
FAILED = {("softmax", 4096): "oom", ("softmax", 8192): "oom", (WINDOW, 8192): "oom", ("performer", 8192): "skipped"}
NEVER_RAN = {("taylor", "fwd", 8192)}
ACCURACY = {  # spec -> task -> test accuracy per seed (None = diverged)
    "softmax": {"mqar": (0.97, 0.95), "listops": (0.42, 0.40)},
    WINDOW: {"mqar": (0.94, 0.93), "listops": (0.41, 0.39)},
    "linear": {"mqar": (0.61, 0.59)},
    "performer": {"mqar": (None, None)},
}
TASKS = {"mqar": (256, 0.05), "listops": (512, 0.18)}  # task -> (seq_len, majority accuracy)
STEP_COST = {"softmax": (0.05, 8e7), WINDOW: (0.03, 5e7), "linear": (0.02, 4e7), "performer": (0.04, 6e7)}
EXPECTED_PLOTS = ("time_vs_n_attention", "memory_vs_n_attention", "gflops_vs_n_attention", "accuracy", "pareto",
                  "accuracy_by_distance", "approximation_error", "patterns")  # fmt: skip


def synthetic_complexity() -> pd.DataFrame:
    rows = []
    for spec, (variant, family, time_of, mem_of) in MODELS.items():
        for pass_, factor in (("fwd", 1), ("fwd+bwd", 3)):
            for n in LENGTHS:
                if (spec, pass_, n) in NEVER_RAN:
                    continue
                status = FAILED.get((spec, n), "ok")
                ok = status == "ok"
                flops = 4 * n * n * 16 * factor
                time = factor * time_of(n)
                rows.append({
                    "spec": spec, "variant": variant, "family": family, "scope": "attention", "pass": pass_,
                    "device": "cpu", "dtype": "float32", "threads": 2, "batch": 1, "heads": 2, "head_dim": 16,
                    "seq_len": n, "causal": False, "status": status,
                    "time_median_s": time if ok else None, "time_iqr_s": 0.02 * time if ok else None,
                    "first_call_s": 2 * time if ok else None, "peak_mem_bytes": factor * mem_of(n) if ok else None,
                    "predicted_peak_bytes": factor * mem_of(n), "flops": flops,
                    "gflops_per_s": flops / time / 1e9 if ok else None,
                    "peak_fraction": flops / time / 1e9 / 46.2 if ok else None,
                    "message": "" if ok else f"{status} at n={n}",
                })  # fmt: skip
    return pd.DataFrame(rows, columns=list(COMPLEXITY_COLUMNS))


def synthetic_accuracy() -> pd.DataFrame:
    rows = []
    for spec, tasks in ACCURACY.items():
        variant, family = MODELS[spec][:2]
        for task, accs in tasks.items():
            seq_len, majority = TASKS[task]
            step, mem = STEP_COST[spec]
            for seed, acc in enumerate(accs):
                rows.append({
                    "task": task, "spec": spec, "variant": variant, "family": family, "cross_variant": "",
                    "seed": seed, "seq_len": seq_len, "model": "d64-l2", "params": 100_000, "steps": 200,
                    "train_time_s": 200 * step, "time_per_step_s": step, "peak_mem_bytes": mem, "best_step": 150,
                    "val_acc": acc, "test_acc": acc, "majority_acc": majority,
                    "status": "ok" if acc is not None else "diverged",
                    "message": "" if acc is not None else "training loss is nan at step 40",
                })  # fmt: skip
    return pd.DataFrame(rows, columns=list(ACCURACY_COLUMNS))


def synthetic_by_distance() -> pd.DataFrame:
    buckets = ("1", "2-3", "4-7", "8-15", "16-31", "32-63", "64-127", "128-255")
    falloff = {"softmax": 0.0, WINDOW: 0.08, "linear": 0.12}
    rows = [
        {"task": "mqar", "spec": spec, "seed": seed, "distance_bucket": bucket, "n": 40,
         "acc": max(0.05, 0.98 - drop * i), "seq_len": 64}
        for spec, drop in falloff.items() for seed in (0, 1) for i, bucket in enumerate(buckets)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=list(BY_DISTANCE_COLUMNS))


def synthetic_approximation() -> pd.DataFrame:
    rows = []
    for spec, base in (("linear", 0.3), ("performer", 0.05), ("taylor", 0.1)):
        variant, family = MODELS[spec][:2]
        for n in (256, 512, 1024, 2048):
            failed = spec == "performer" and n == 2048
            rows.append({
                "spec": spec, "variant": variant, "family": family, "causal": False, "seq_len": n, "batch": 1,
                "heads": 2, "head_dim": 16, "dtype": "float32", "status": "error" if failed else "ok",
                "rel_error": None if failed else base * (n / 256) ** 0.25, "message": "boom" if failed else "",
            })  # fmt: skip
    return pd.DataFrame(rows, columns=list(APPROXIMATION_COLUMNS))


def synthetic_manifest(*, cpu_model: str = "Synthetic CPU", sessions: tuple[str, ...] = ("complete",)) -> dict:
    return {
        "schema_version": 1,
        "command": "run",
        "suite": "synthetic",
        "created": "2025-01-01T00:00:00+00:00",
        "environment": {
            "attnbench_version": "0.1.0",
            "git": {"commit": "0123456789abcdef", "dirty": True},
            "python": "3.11.7",
            "torch": "2.5.0+cpu",
            "platform": "Linux",
            "cpu_model": cpu_model,
            "cpu_count": 2,
            "threads": 2,
            "device": "cpu",
            "device_name": cpu_model,
            "cuda": None,
            "memory_available_bytes": 8 * 2**30,
        },
        "machine": {"matmul_peak_gflops": 46.2, "matmul": "2048x2048 mm"},
        "plugins": {"files_and_modules": [], "entry_points": {}},
        "sessions": [
            {"start": f"s{i}", "end": "e", "status": s, "argv": ["attnbench"]} for i, s in enumerate(sessions)
        ],
        "complexity": {
            "variants": list(MODELS),
            "seq_lens": list(LENGTHS),
            "passes": ["fwd", "fwd+bwd"],
            "batch": 1,
            "heads": 2,
            "head_dim": 16,
            "causal": False,
            "dtype": "float32",
            "device": "cpu",
            "threads": 2,
            "memory_budget_bytes": 4 * 2**30,
            "time_budget_s": 60.0,
        },
    }


def write_run(
    path: Path,
    *,
    manifest: dict | None = None,
    complexity: pd.DataFrame | None = None,
    accuracy: pd.DataFrame | None = None,
    by_distance: pd.DataFrame | None = None,
    approximation: pd.DataFrame | None = None,
) -> Path:
    """A results directory as the sweeps write it (CsvAppender rows); a frame that is None is not written."""
    path.mkdir(parents=True)
    write_json_atomic(path / "manifest.json", manifest or synthetic_manifest())
    files: dict[str, tuple[pd.DataFrame | None, tuple[str, ...]]] = {
        "complexity.csv": (complexity, COMPLEXITY_COLUMNS),
        "accuracy.csv": (accuracy, ACCURACY_COLUMNS),
        "accuracy_by_distance.csv": (by_distance, BY_DISTANCE_COLUMNS),
        "approximation.csv": (approximation, APPROXIMATION_COLUMNS),
    }
    for name, (frame, columns) in files.items():
        if frame is not None:
            rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
            CsvAppender(path / name, columns).extend(rows)
    return path


def full_run(path: Path, **changes: Any) -> Path:
    """The whole synthetic run (no curves.csv: the missing file); ``changes`` replace any part."""
    parts = {"complexity": synthetic_complexity(), "accuracy": synthetic_accuracy(),
             "by_distance": synthetic_by_distance(), "approximation": synthetic_approximation()} | changes  # fmt: skip
    return write_run(path, **parts)


def section(report: str, title: str) -> str:
    """The text of a ``## title`` section of report.md."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", report, flags=re.S | re.M)
    assert match, f"report has no section {title!r}"
    return match.group(1)


def table_row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


# write_report ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = full_run(tmp_path_factory.mktemp("report") / "run", manifest=synthetic_manifest(
        sessions=("interrupted", "complete")))  # fmt: skip
    path = write_report(run)
    return run, path.read_text()


def test_write_report_draws_every_plot_as_png_and_svg_and_embeds_it(report_run: tuple[Path, str]) -> None:
    run, report = report_run
    for name in EXPECTED_PLOTS:
        for ext in ("png", "svg"):
            file = run / "plots" / f"{name}.{ext}"
            assert file.is_file() and file.stat().st_size > 1000, file
        assert f"](plots/{name}.png)" in report
    assert (run / "plots" / "time_vs_n_attention.png").read_bytes()[:4] == b"\x89PNG"
    assert "could not be drawn" not in report


def test_report_mentions_every_variant_and_every_failure(report_run: tuple[Path, str]) -> None:
    _, report = report_run
    for spec in MODELS:
        assert spec in section(report, "Recommendation"), spec
        assert spec in section(report, "Time and memory"), spec
    cells = section(report, "Time and memory")
    fwd = cells.split("### attention · fwd+bwd")[0]
    assert table_row(fwd, "softmax")[-2:] == ["*oom*", "*oom*"]
    assert table_row(fwd, "performer")[-1] == "*skipped*"
    assert table_row(fwd, "taylor")[-1] == "*missing*"
    assert "1 cell(s) missing" in cells
    assert table_row(section(report, "Approximation error"), "performer")[-1] == "*error*"


def test_report_states_environment_partial_run_and_missing_file(report_run: tuple[Path, str]) -> None:
    _, report = report_run
    env = section(report, "Environment")
    assert "Synthetic CPU (2 CPUs)" in env and "46.2 GFLOP/s" in env and "`0123456789ab` (uncommitted changes)" in env
    assert table_row(env, "threads")[1] == "2"
    assert "**Partial run**" in report and "interrupted" in report
    assert table_row(section(report, "Result files"), "`curves.csv`")[1] == "missing"
    assert table_row(section(report, "Result files"), "`complexity.csv`")[1] == f"{len(synthetic_complexity())} rows"


def test_report_recommendation_table_is_what_a_person_would_pick(report_run: tuple[Path, str]) -> None:
    _, report = report_run
    rec = section(report, "Recommendation")
    assert "tolerance: 5 accuracy points" in rec and "speed only, accuracy untested" in rec
    fwd = rec.split("### attention · fwd+bwd")[0]
    # n=256: linear is faster but 36 points below softmax; window is the fastest that keeps accuracy,
    # softmax (8·n² = 512 KiB) is leaner than window (3000·n = 750 KiB)
    row = table_row(fwd, "256")
    assert row[1] == f"**{WINDOW}**" and row[3] == "**softmax**" and "faster but below tolerance: linear" in row[5]
    assert table_row(fwd, "4096")[1:4:2] == [f"**{WINDOW}**", f"**{WINDOW}**"]  # softmax is oom there
    assert table_row(fwd, "8192")[1] == "**none fits**"  # only linear (below) ran ok
    bwd = rec.split("### attention · fwd+bwd")[1]
    assert table_row(bwd, "8192")[1] == "**none fits**"
    assert table_row(bwd, "8192")[5] == (
        "fastest that fits but accuracy untested: taylor; fastest that fits but below tolerance: linear"
    )
    verdicts = {s: table_row(rec, s)[1] for s in MODELS}
    assert verdicts["softmax"] == "baseline" and verdicts[WINDOW].startswith("keeps accuracy")
    assert verdicts["linear"].startswith("**excluded**") and verdicts["performer"].startswith("**excluded**")
    assert verdicts["taylor"] == "speed only, accuracy untested"
    assert "mqar (n=256): failed" in table_row(rec, "performer")[2]


def test_report_accuracy_table_has_mean_interval_and_majority(report_run: tuple[Path, str]) -> None:
    _, report = report_run
    acc = section(report, "Accuracy")
    rows = [line for line in acc.splitlines() if line.startswith("| mqar |")]
    softmax = next(r for r in rows if "| softmax |" in r)
    half_width = 100 * 12.706 * math.sqrt(0.0002) / math.sqrt(2)  # t(0.975, 1 df) · std of (0.97, 0.95) / √2
    assert f"96.0 ± {half_width:.1f}%" in softmax and "5.0%" in softmax and "95.0%–97.0%" in softmax
    performer = next(r for r in rows if "| performer |" in r)
    assert "diverged×2" in performer and "0/2" in performer


def test_a_partial_complexity_only_run_with_a_torn_last_line_is_reported_read_only(tmp_path: Path) -> None:
    complexity = synthetic_complexity()
    complexity = complexity[complexity["spec"].isin(["softmax", "linear"]) & (complexity["pass"] == "fwd")]
    run = write_run(tmp_path / "run", complexity=complexity)
    with (run / "complexity.csv").open("a") as f:
        f.write("linear,linear,linear,attention,fwd,cpu,float32,2,1,2,16,16384,fal")  # a killed writer
    before = (run / "complexity.csv").read_bytes()
    report = write_report(run).read_text()
    assert (run / "complexity.csv").read_bytes() == before
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        f"{name}_vs_n_attention.{ext}" for name in ("gflops", "memory", "time") for ext in ("png", "svg")
    ]
    assert "16384" not in report
    assert "No accuracy results" in section(report, "Accuracy")
    rec = section(report, "Recommendation")
    assert table_row(rec, "256")[1] == "**softmax**"  # nothing has accuracy results: only the reference qualifies
    assert "no accuracy results, so only softmax (the reference) can be recommended" in rec
    assert table_row(rec, "256")[5] == "faster but accuracy untested: linear"
    assert table_row(rec, "8192")[5] == "fastest that fits but accuracy untested: linear"  # softmax did not fit
    assert write_report(run).read_text() == report  # regenerating gives the same report


def test_a_run_is_partial_by_its_missing_cells_not_by_a_running_session(tmp_path: Path) -> None:
    complete = synthetic_complexity()
    complete = complete[complete["spec"] != "taylor"]  # taylor is the spec with a never-run cell
    manifest = synthetic_manifest(sessions=("running",))
    manifest["complexity"]["variants"].remove("taylor")
    tasks = [{"task": "mqar", "variants": list(ACCURACY), "seeds": [0, 1]},
             {"task": "listops", "variants": ["softmax", WINDOW], "seeds": [0, 1]}]  # fmt: skip
    manifest["accuracy"] = {"tasks": tasks}
    whole = load_run(write_run(tmp_path / "whole", manifest=manifest, complexity=complete,
                               accuracy=synthetic_accuracy()))  # fmt: skip
    assert partial_notes(whole) == [] and "Partial run" not in header_section(whole)
    manifest["accuracy"]["tasks"][1]["seeds"] = [0, 1, 2]
    short = load_run(write_run(tmp_path / "short", manifest=manifest, complexity=synthetic_complexity(),
                               accuracy=synthetic_accuracy()))  # fmt: skip
    assert partial_notes(short) == ["1 complexity cell(s) have no result", "2 of 14 accuracy cell(s) have no result"]
    assert f"`attnbench run --resume {short.path}`" in header_section(short)


def test_the_tolerance_recorded_by_the_suite_is_the_default(tmp_path: Path) -> None:
    manifest = synthetic_manifest() | {"run": {"acc_tolerance": 1.0}}
    run = write_run(tmp_path / "run", manifest=manifest)  # no results: the rule is stated all the same
    assert "(tolerance: 1 accuracy points)" in write_report(run).read_text()
    assert "(tolerance: 3 accuracy points)" in write_report(run, acc_tolerance=3.0).read_text()


def test_report_of_an_empty_run_says_what_is_missing(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    report = write_report(run).read_text()
    assert "No complexity results" in report and "nothing to recommend" in report
    assert not (run / "plots").exists()
    assert all(table_row(section(report, "Result files"), f"`{n}`")[1] == "missing"
               for n in ("complexity.csv", "accuracy.csv", "curves.csv"))  # fmt: skip


def test_bad_run_directories_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope does not exist"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty/manifest\.json not found.*not an attnbench run directory"):
        write_report(tmp_path / "empty")
    run = write_run(tmp_path / "run")
    (run / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match=r"manifest\.json is not valid JSON"):
        load_run(run)
    (run / "manifest.json").write_text(json.dumps(synthetic_manifest()))
    (run / "complexity.csv").write_text("x,y\n1,2\n")
    with pytest.raises(UserError, match=r"complexity\.csv: missing columns"):
        load_run(run)


# the rule, on frames ---------------------------------------------------------------------------------------
def _picks(tolerance: float, n: int = 256, pass_: str = "fwd") -> dict[str, str | None]:
    recs = recommendations(synthetic_complexity(), synthetic_accuracy(), tolerance_points=tolerance)
    row = recs[(recs["seq_len"] == n) & (recs["pass"] == pass_)].iloc[0]
    names = ("fastest", "leanest", "faster_below", "faster_untested")
    return {k: None if pd.isna(row[k]) else row[k] for k in names}


def test_recommendations_follow_the_tolerance() -> None:
    assert _picks(5.0) == {"fastest": WINDOW, "leanest": "softmax", "faster_below": "linear", "faster_untested": None}
    assert _picks(5.0, n=2048)["leanest"] == WINDOW  # 3000·n < 8·n² from n = 375 on
    # window is 2.5 points down on mqar: a 1-point tolerance leaves only softmax, which is oom from 4096
    assert _picks(1.0) == {
        "fastest": "softmax",
        "leanest": "softmax",
        "faster_below": "linear",
        "faster_untested": "taylor",
    }
    assert _picks(1.0, n=4096)["fastest"] is None
    # linear is 36 points down: at 40 points it qualifies and is both the fastest and, from 512, the leanest
    assert _picks(40.0)["fastest"] == "linear"
    assert _picks(40.0, n=512) == {"fastest": "linear", "leanest": "linear", "faster_below": None,
                                   "faster_untested": None}  # fmt: skip
    assert _picks(40.0, n=8192, pass_="fwd+bwd") == {"fastest": "linear", "leanest": "linear",
                                                     "faster_below": None, "faster_untested": None}  # fmt: skip


def test_accuracy_verdicts_on_known_numbers() -> None:
    accuracy = synthetic_accuracy()
    skipped = accuracy.iloc[[0]].assign(spec="longformer", status="skipped", test_acc=None)
    verdicts = accuracy_verdicts(pd.concat([accuracy, skipped]), tolerance_points=5.0).set_index("spec")
    assert verdicts["verdict"].to_dict() == {
        "linear": "below", "longformer": "untested", "performer": "below", "softmax": "baseline", WINDOW: "within",
    }  # fmt: skip
    assert verdicts.loc[WINDOW, "worst_task"] == "mqar (n=256)"
    assert verdicts.loc[WINDOW, "worst_gap_points"] == pytest.approx(-2.5)
    assert verdicts.loc[WINDOW, "tasks_compared"] == 2
    assert verdicts.loc["performer", "worst_gap_points"] == -math.inf
    without_softmax = accuracy[accuracy["spec"] != "softmax"]
    assert set(accuracy_verdicts(without_softmax)["verdict"]) == {"untested"}


def test_a_task_softmax_did_not_learn_does_not_count() -> None:
    listops = synthetic_accuracy()
    listops = listops[listops["task"] == "listops"].assign(task="hard")
    listops.loc[listops["spec"] == "softmax", "test_acc"] = 0.20  # majority 18%: within 5 points of chance
    listops.loc[listops["spec"] == WINDOW, "test_acc"] = 0.05  # far below softmax, but on a task nobody learned
    verdicts = accuracy_verdicts(pd.concat([synthetic_accuracy(), listops])).set_index("spec")
    assert verdicts.loc[WINDOW, "verdict"] == "within" and verdicts.loc[WINDOW, "tasks_compared"] == 2
    assert "hard (n=512): not counted, softmax is within 5 points of chance" in verdicts.loc[WINDOW, "detail"]
    others = accuracy_verdicts(listops).set_index("spec").drop(index="softmax")
    assert set(others["verdict"]) == {"untested"}


def test_accuracy_summary_interval_uses_student_t() -> None:
    frame = synthetic_accuracy()
    three = frame[(frame["spec"] == "softmax") & (frame["task"] == "mqar")]
    three = pd.concat([three, three.iloc[[0]].assign(seed=2, test_acc=0.99)])
    row = accuracy_spread(three).iloc[0]
    assert row["seeds_ok"] == 3 and row["test_mean"] == pytest.approx(0.97)
    assert row["test_ci95"] == pytest.approx(4.303 * 0.02 / math.sqrt(3))
    single = accuracy_spread(three.iloc[[0]]).iloc[0]
    assert single["seeds_ok"] == 1 and math.isnan(single["test_ci95"])
