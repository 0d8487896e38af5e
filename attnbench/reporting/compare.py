"""Line up two runs cell by cell and find regressions: the engine of ``attnbench compare RUN_A RUN_B``.

Complexity cells line up by canonical spec, scope, pass and shape; accuracy by task, length and spec (the
mean over each run's usable seeds). B is the candidate, A the reference: a ratio is B/A.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.core.errors import UserError
from attnbench.reporting.analysis import accuracy_spread, scaling_exponents, stable_mask
from attnbench.reporting.units import human_bytes, human_percent, human_seconds
from attnbench.runs.environment import same_machine
from attnbench.runs.loading import RunData, load_run

COMPLEXITY_KEY = ("spec", "scope", "pass", "batch", "heads", "head_dim", "seq_len", "causal", "dtype", "device")
ACCURACY_KEY = ("task", "seq_len", "spec")
SHAPE = ("batch", "heads", "head_dim", "causal", "dtype", "device")
MIN_MEM_GROWTH_BYTES = 2**20  # CPU peak memory is a resident-set reading: growth below 1 MiB is page noise


@dataclass(frozen=True)
class Regression:
    kind: str  # time | memory | status | accuracy
    cell: str  # the cell in words: "window attention fwd n=1024"
    a: str
    b: str
    change: str  # "2.00× slower", "-7.5 points", "ok → oom"


@dataclass
class Comparison:
    """Two runs lined up. ``complexity`` and ``accuracy`` hold the cells present in both runs."""

    run_a: Path
    run_b: Path
    complexity: pd.DataFrame
    accuracy: pd.DataFrame
    regressions: list[Regression]
    not_comparable: pd.DataFrame  # kind, cell, side ("only in A" | "only in B")
    same_machine: bool
    warnings: list[str] = field(default_factory=list)
    fail_on: float = 0.10
    acc_drop: float = 2.0
    exponents: pd.DataFrame = field(default_factory=pd.DataFrame)  # time exponents of both runs, with intervals

    @property
    def has_regressions(self) -> bool:
        return bool(self.regressions)


def _latest(frame: pd.DataFrame, key: tuple[str, ...]) -> pd.DataFrame:
    return frame.drop_duplicates(list(key), keep="last")


def _cell_name(row: pd.Series, shape_varies: bool) -> str:
    text = f"{row['spec']} {row['scope']} {row['pass']} n={int(row['seq_len'])}"
    if shape_varies:
        text += " [" + " ".join(f"{k}={row[k]}" for k in SHAPE) + "]"
    return text


def _outside_spread(slow: float, slow_iqr: float, fast: float, fast_iqr: float, fail_on: float) -> bool:
    """Slower beyond ``fail_on`` and beyond both cells' spread: the intervals median ± IQR do not overlap."""
    slow_iqr = 0.0 if math.isnan(slow_iqr) else slow_iqr
    fast_iqr = 0.0 if math.isnan(fast_iqr) else fast_iqr
    return slow > fast * (1 + fail_on) and slow - slow_iqr > fast + fast_iqr


def line_up_complexity(
    a: pd.DataFrame, b: pd.DataFrame, *, fail_on: float, min_mem_growth: int = MIN_MEM_GROWTH_BYTES
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cells in both runs with ratios and a ``verdict`` (``regression`` is True for a regression), and the
    cells in one run only.

    Time: B slower than A by more than ``fail_on`` and beyond both cells' spread (median ± IQR intervals do
    not overlap), both timings stable (an unstable one is shown, not flagged). Memory: B's peak above A's by
    more than ``fail_on`` and by at least ``min_mem_growth`` bytes. Status: a cell ok in A that is not ok in
    B. The mirror images are reported as improvements.
    """
    key = list(COMPLEXITY_KEY)
    keep = [*key, "status", "time_median_s", "time_iqr_s", "peak_mem_bytes", "stable"]
    merged = pd.merge(
        _latest(a, COMPLEXITY_KEY).assign(stable=lambda f: stable_mask(f))[keep],
        _latest(b, COMPLEXITY_KEY).assign(stable=lambda f: stable_mask(f))[keep],
        on=key,
        how="outer",
        suffixes=("_a", "_b"),
        indicator=True,
        sort=True,
    )
    shape_varies = bool(len(merged)) and any(merged[k].nunique(dropna=False) > 1 for k in SHAPE)
    merged["cell"] = [_cell_name(r, shape_varies) for _, r in merged.iterrows()] if len(merged) else []
    lonely, both = _split_sides(merged, "complexity")
    both["time_ratio"] = both["time_median_s_b"] / both["time_median_s_a"]
    both["mem_ratio"] = both["peak_mem_bytes_b"] / both["peak_mem_bytes_a"].where(both["peak_mem_bytes_a"] > 0)
    verdicts, flags = [], []
    for _, r in both.iterrows():
        words, regression = [], False
        ok_a, ok_b = r["status_a"] == "ok", r["status_b"] == "ok"
        if ok_a and not ok_b:
            words.append(f"ok → {r['status_b']}")
            regression = True
        elif ok_b and not ok_a:
            words.append(f"{r['status_a']} → ok")
        elif ok_a and ok_b:
            ta, tb = float(r["time_median_s_a"]), float(r["time_median_s_b"])
            ia, ib = float(r["time_iqr_s_a"]), float(r["time_iqr_s_b"])
            trusted = bool(r["stable_a"]) and bool(r["stable_b"])
            if _outside_spread(tb, ib, ta, ia, fail_on):
                words.append("slower" if trusted else "slower (unstable timing: not flagged)")
                regression = trusted
            elif _outside_spread(ta, ia, tb, ib, fail_on):
                words.append("faster")
            ma, mb = float(r["peak_mem_bytes_a"]), float(r["peak_mem_bytes_b"])
            if mb > ma * (1 + fail_on) and mb - ma >= min_mem_growth:
                words.append("more memory")
                regression = True
            elif ma > mb * (1 + fail_on) and ma - mb >= min_mem_growth:
                words.append("less memory")
        verdicts.append(", ".join(words))
        flags.append(regression)
    both["verdict"] = verdicts
    both["regression"] = flags
    return both, lonely


def line_up_exponents(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Each run's robust time exponent with its 95% interval, per spec × scope × pass × causal.

    A regression when the intervals separate with B's above A's (B scales worse); a steeper point estimate
    inside overlapping intervals is not one.
    """
    columns = ["spec", "scope", "pass", "causal"]
    parts = []
    for frame in (a, b):
        exps = scaling_exponents(frame, metrics=("time_median_s",), group=columns) if not frame.empty else None
        if exps is None or exps.empty:
            return pd.DataFrame()
        parts.append(exps[[c for c in columns if c in exps.columns] + ["exponent", "exponent_low", "exponent_high"]])
    keys = [c for c in columns if c in parts[0].columns and c in parts[1].columns]
    both = pd.merge(parts[0], parts[1], on=keys, suffixes=("_a", "_b")).dropna(subset=["exponent_a", "exponent_b"])
    verdicts, flags = [], []
    for _, r in both.iterrows():
        if r["exponent_low_b"] > r["exponent_high_a"]:
            verdicts.append("scales worse (intervals separate)")
            flags.append(True)
        elif r["exponent_high_b"] < r["exponent_low_a"]:
            verdicts.append("scales better (intervals separate)")
            flags.append(False)
        else:
            verdicts.append("")
            flags.append(False)
    both["verdict"] = verdicts
    both["regression"] = flags
    both["cell"] = [f"{r['spec']} {r['scope']} {r['pass']}" for _, r in both.iterrows()]
    return both.reset_index(drop=True)


def exponent_text(value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}" + ("" if math.isnan(low) or math.isnan(high) else f" [{low:.2f}, {high:.2f}]")


def line_up_accuracy(a: pd.DataFrame, b: pd.DataFrame, *, acc_drop: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per task × length × spec, the mean test accuracy over each run's usable seeds; a drop of more than
    ``acc_drop`` percentage points, or usable seeds in A and none in B, is a regression."""
    summary_cols = [*ACCURACY_KEY, "test_mean", "seeds_ok", "seeds_run", "failures"]
    sa, sb = accuracy_spread(a)[summary_cols], accuracy_spread(b)[summary_cols]
    merged = pd.merge(sa, sb, on=list(ACCURACY_KEY), how="outer", suffixes=("_a", "_b"), indicator=True, sort=True)
    merged["cell"] = [
        f"{r['task']} n={int(r['seq_len']) if pd.notna(r['seq_len']) else '?'} {r['spec']}"
        for _, r in merged.iterrows()
    ]
    lonely, both = _split_sides(merged, "accuracy")
    both["delta_points"] = 100 * (both["test_mean_b"] - both["test_mean_a"])
    verdicts, flags = [], []
    for _, r in both.iterrows():
        has_a, has_b = r["seeds_ok_a"] > 0, r["seeds_ok_b"] > 0
        if has_a and not has_b:
            verdicts.append(f"no usable seed in B ({r['failures_b'] or 'no rows'})")
            flags.append(True)
        elif has_a and has_b and r["delta_points"] < -acc_drop:
            verdicts.append(f"dropped {-r['delta_points']:.1f} points")
            flags.append(True)
        elif has_a and has_b and r["delta_points"] > acc_drop:
            verdicts.append(f"gained {r['delta_points']:.1f} points")
            flags.append(False)
        else:
            verdicts.append("" if has_a == has_b else "usable in B only")
            flags.append(False)
    both["verdict"] = verdicts
    both["regression"] = flags
    return both, lonely


def environment_warnings(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between the two runs' environments that would move the numbers."""
    env_a, env_b = a.get("environment") or {}, b.get("environment") or {}
    notes = []
    if not same_machine(env_a, env_b):

        def machine(env: dict[str, Any]) -> str:
            return f"{env.get('device_name') or env.get('cpu_model', '?')}, {env.get('cpu_count', '?')} CPUs"

        notes.append(
            f"the runs are on different machines (A: {machine(env_a)}; B: {machine(env_b)}): "
            "ratios mix hardware and code changes"
        )
    for label, key in (("torch", "torch"), ("threads", "threads"), ("device", "device")):
        if env_a.get(key) != env_b.get(key):
            notes.append(f"{label} differs (A: {env_a.get(key)}; B: {env_b.get(key)})")
    peak_a = (a.get("machine") or {}).get("matmul_peak_gflops")
    peak_b = (b.get("machine") or {}).get("matmul_peak_gflops")
    if peak_a and peak_b and abs(peak_b / peak_a - 1) > 0.2:
        notes.append(f"the measured matmul peak differs by {100 * (peak_b / peak_a - 1):+.0f}% (machine load?)")
    return notes


def compare_runs(run_a: Path, run_b: Path, *, fail_on: float = 0.10, acc_drop: float = 2.0) -> Comparison:
    """Compare run B against reference run A. ``fail_on`` is relative (0.10 = 10%); ``acc_drop`` is in accuracy
    points (2.0 = two percentage points)."""
    a, b = load_run(Path(run_a)), load_run(Path(run_b))
    return compare_data(a, b, fail_on=fail_on, acc_drop=acc_drop)


def compare_data(a: RunData, b: RunData, *, fail_on: float = 0.10, acc_drop: float = 2.0) -> Comparison:
    complexity, lonely_c = line_up_complexity(a.complexity, b.complexity, fail_on=fail_on)
    accuracy, lonely_a = line_up_accuracy(a.accuracy, b.accuracy, acc_drop=acc_drop)
    if complexity.empty and accuracy.empty:
        # "0 regressions" would pass a CI job that was handed the wrong baseline
        lonely = pd.concat([lonely_c, lonely_a], ignore_index=True)
        held = {side: (lonely["side"] == f"only in {side}").sum() for side in ("A", "B")}
        raise UserError(
            f"runs {a.path} (A, {held['A']} cells) and {b.path} (B, {held['B']} cells) have no cell in common: "
            "nothing to compare (different suites, variants or shapes? compare runs of the same suite)"
        )
    regressions = [_complexity_regression(r) for _, r in complexity[complexity["regression"]].iterrows()]
    exponents = line_up_exponents(a.complexity, b.complexity)
    if not exponents.empty:
        regressions += [
            Regression(
                "exponent",
                r["cell"],
                exponent_text(r["exponent_a"], r["exponent_low_a"], r["exponent_high_a"]),
                exponent_text(r["exponent_b"], r["exponent_low_b"], r["exponent_high_b"]),
                r["verdict"],
            )
            for _, r in exponents[exponents["regression"]].iterrows()
        ]
    regressions += [
        Regression(
            "accuracy", r["cell"], human_percent(r["test_mean_a"]), human_percent(r["test_mean_b"]), r["verdict"]
        )
        for _, r in accuracy[accuracy["regression"]].iterrows()
    ]
    env_a, env_b = a.manifest.get("environment") or {}, b.manifest.get("environment") or {}
    return Comparison(
        run_a=a.path,
        run_b=b.path,
        complexity=complexity,
        accuracy=accuracy,
        regressions=regressions,
        not_comparable=pd.concat([lonely_c, lonely_a], ignore_index=True),
        same_machine=same_machine(env_a, env_b),
        warnings=environment_warnings(a.manifest, b.manifest),
        fail_on=fail_on,
        acc_drop=acc_drop,
        exponents=exponents,
    )


def _complexity_regression(r: pd.Series) -> Regression:
    if r["status_a"] == "ok" and r["status_b"] != "ok":
        return Regression("status", r["cell"], "ok", str(r["status_b"]), r["verdict"])
    if "slower" in r["verdict"]:
        return Regression("time", r["cell"], human_seconds(r["time_median_s_a"]), human_seconds(r["time_median_s_b"]),
                          f"{r['time_ratio']:.2f}× slower")  # fmt: skip
    growth = r["peak_mem_bytes_b"] / r["peak_mem_bytes_a"] if r["peak_mem_bytes_a"] > 0 else math.inf
    return Regression("memory", r["cell"], human_bytes(r["peak_mem_bytes_a"]), human_bytes(r["peak_mem_bytes_b"]),
                      f"{growth:.2f}× the memory")  # fmt: skip


def comparison_summary(cmp: Comparison) -> str:
    """One line: how many cells were compared, regressions by kind, cells that could not be compared."""
    kinds = pd.Series([r.kind for r in cmp.regressions], dtype=object).value_counts()
    found = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    compared = len(cmp.complexity) + len(cmp.accuracy)
    text = f"{len(cmp.regressions)} regression(s)" + (f" ({found})" if found else "") + f" in {compared} cells"
    text += f" (fail on > {100 * cmp.fail_on:g}% slower or more memory, > {cmp.acc_drop:g} accuracy points lower)"
    if len(cmp.not_comparable):
        text += f"; {len(cmp.not_comparable)} cell(s) not comparable (in one run only)"
    return text


def _split_sides(merged: pd.DataFrame, kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An outer merge (``indicator=True``, a ``cell`` label column) → (cells on one side only, cells on both)."""
    one_sided = merged[merged["_merge"] != "both"]
    lonely = pd.DataFrame({
        "kind": kind,
        "cell": one_sided["cell"],
        "side": one_sided["_merge"].map({"left_only": "only in A", "right_only": "only in B"}),
    })  # fmt: skip
    both = merged[merged["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    return lonely, both
