"""Pure functions on result DataFrames: scaling exponents, crossovers, the longest n that fits."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from attnbench.core.baseline import ACC_TOLERANCE_POINTS, BASELINE
from attnbench.core.robust import power_law

GROUP = ("spec", "scope", "pass", "causal", "node_type")  # node_type: fits never mix different machines
TAIL_POINTS = 4  # exponents are fitted over the largest lengths, where the asymptotic term dominates
MIN_POINTS = 3


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"] if "status" in frame.columns else frame


def stable_mask(frame: pd.DataFrame) -> pd.Series:
    """True for rows whose timing is trusted; a run from before the ``stable`` column counts as stable."""
    if "stable" not in frame.columns:
        return pd.Series(True, index=frame.index)
    text = frame["stable"].astype(str).str.strip().str.lower()
    return ~text.isin(["false", "0", "0.0"])


def unstable_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The ok cells measured but not trusted (``stable`` false)."""
    if frame.empty:
        return frame
    ok = ok_rows(frame)
    return ok[~stable_mask(ok)]


def _trusted(part: pd.DataFrame, minimum: int = 1) -> tuple[pd.DataFrame, int, bool]:
    """A group's rows without unstable ones, unless fewer than ``minimum`` stable ones remain (nothing else exists).

    Returns (rows, unstable rows left out, whether unstable rows had to be used).
    """
    stable = stable_mask(part)
    unstable = int((~stable).sum())
    if unstable and int(stable.sum()) >= minimum:
        return part[stable], unstable, False
    return part, 0, bool(unstable)


def fit_power_law(n: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least squares of log y = a + b·log n: returns (exponent b, prefactor e^a, r²)."""
    x = np.log(np.asarray(n, dtype=float))
    z = np.log(np.asarray(y, dtype=float))
    slope, intercept = np.polyfit(x, z, 1)
    residual = z - (slope * x + intercept)
    total = z - z.mean()
    ss_tot = float(total @ total)
    r2 = 1.0 - float(residual @ residual) / ss_tot if ss_tot > 0 else 1.0
    return float(slope), float(math.exp(intercept)), r2


def robust_power_law(n: Sequence[float], y: Sequence[float]) -> tuple[float, float, float, float]:
    """Theil–Sen of log y on log n: (exponent, its 95% bootstrap interval low and high, r² of that line)."""
    line = power_law(n, y)
    x = np.log(np.asarray(n, dtype=float))
    z = np.log(np.asarray(y, dtype=float))
    residual = z - (line.slope * x + line.intercept)
    total = z - z.mean()
    ss_tot = float(total @ total)
    r2 = 1.0 - float(residual @ residual) / ss_tot if ss_tot > 0 else 1.0
    return line.slope, line.slope_low, line.slope_high, r2


def scaling_exponents(
    frame: pd.DataFrame,
    metrics: Sequence[str] = ("time_median_s", "peak_mem_bytes"),
    *,
    tail: int = TAIL_POINTS,
    group: Sequence[str] = GROUP,
) -> pd.DataFrame:
    """One row per group × metric: the robust (Theil–Sen) log-log slope over the ``tail`` largest ok lengths.

    With its 95% bootstrap interval (``exponent_low``/``exponent_high``, over the lengths) and the r² of
    that line. Time fits leave unstable cells out (``unstable_left_out`` counts them) unless too few stable
    ones remain, when ``uses_unstable`` says the fit had to include them.
    """
    rows = []
    keys = [g for g in group if g in frame.columns]
    for key, part in ok_rows(frame).groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            chosen, left_out, uses_unstable = (
                _trusted(part, MIN_POINTS) if metric.startswith("time") else (part, 0, False)
            )
            points = chosen[["seq_len", metric]].dropna()
            points = points[points[metric] > 0].sort_values("seq_len").drop_duplicates("seq_len", keep="last")
            points = points.tail(tail)
            record = dict(zip(keys, key, strict=True)) | {
                "metric": metric, "points": len(points), "unstable_left_out": left_out,
                "uses_unstable": uses_unstable,
            }  # fmt: skip
            if len(points) >= MIN_POINTS:
                slope, low, high, r2 = robust_power_law(points["seq_len"], points[metric])
                record |= {"exponent": slope, "exponent_low": low, "exponent_high": high, "r2": r2,
                           "n_min": int(points["seq_len"].min()), "n_max": int(points["seq_len"].max())}  # fmt: skip
            else:
                record |= {"exponent": math.nan, "exponent_low": math.nan, "exponent_high": math.nan,
                           "r2": math.nan, "n_min": math.nan, "n_max": math.nan}  # fmt: skip
            rows.append(record)
    return pd.DataFrame(rows)


def crossovers(
    frame: pd.DataFrame, *, baseline: str = BASELINE, metric: str = "time_median_s", group: Sequence[str] = GROUP
) -> pd.DataFrame:
    """For each spec: the smallest measured n from which it beats ``baseline`` at every larger measured n.

    A length where the baseline failed (oom/timeout) but the variant ran counts as a win. ``crossover_n``
    is NaN when the variant never stays ahead within the measured range; ``always_ahead`` marks a
    variant already ahead at the smallest common length.
    """
    context = [g for g in group if g != "spec" and g in frame.columns]
    rows = []
    for ctx_key, part in frame.groupby(context, dropna=False, sort=True):
        ctx_key = ctx_key if isinstance(ctx_key, tuple) else (ctx_key,)
        part = _without_unstable(part)
        base = part[part["spec"] == baseline]
        if base.empty:
            continue
        base_by_n = base.drop_duplicates("seq_len", keep="last").set_index("seq_len")
        for spec, rows_of_spec in part.groupby("spec", sort=True):
            if spec == baseline:
                continue
            mine = rows_of_spec.drop_duplicates("seq_len", keep="last").set_index("seq_len")
            common = sorted(set(mine.index) & set(base_by_n.index))
            wins = [_wins(mine.loc[n], base_by_n.loc[n], metric) for n in common]
            decided = [(n, w) for n, w in zip(common, wins, strict=True) if w is not None]
            crossover = math.nan
            for i, (n, _) in enumerate(decided):
                if all(w for _, w in decided[i:]):
                    crossover = n
                    break
            ratio_at_max = math.nan
            both_ok = [n for n in common if mine.loc[n, "status"] == "ok" and base_by_n.loc[n, "status"] == "ok"]
            if both_ok:
                n_max = max(both_ok)
                ratio_at_max = float(base_by_n.loc[n_max, metric] / mine.loc[n_max, metric])
            low, high = crossover_interval(mine, base_by_n, both_ok, metric)
            record = dict(zip(context, ctx_key, strict=True)) | {
                "spec": spec,
                "baseline": baseline,
                "crossover_n": crossover,
                "always_ahead": bool(decided) and crossover == decided[0][0],
                "speedup_at_largest_common_n": ratio_at_max,
                "crossover_low": low,
                "crossover_high": high,
            }
            rows.append(record)
    return pd.DataFrame(rows)


def _without_unstable(part: pd.DataFrame) -> pd.DataFrame:
    """Unstable ok rows left out, per spec, unless a spec has no stable ok row at all (nothing else exists)."""
    if "stable" not in part.columns:
        return part
    keep = pd.Series(True, index=part.index)
    for _, rows_of_spec in part.groupby("spec", sort=False):
        ok = rows_of_spec[rows_of_spec["status"] == "ok"]
        stable = stable_mask(ok)
        if stable.any():
            keep[ok.index[~stable]] = False
    return part[keep]


def crossover_interval(
    mine: pd.DataFrame, base: pd.DataFrame, lengths: Sequence[int], metric: str = "time_median_s"
) -> tuple[float, float]:
    """Where the variant overtakes the baseline for good (log-interpolated), optimistic and pessimistic.

    Each cell's time is taken as an interval, median ± IQR: the low end of the crossover compares the variant's
    fast end with the baseline's slow end, the high end the reverse. NaN where it never stays ahead.
    """
    if not lengths or metric != "time_median_s" or "time_iqr_s" not in mine.columns:
        return math.nan, math.nan

    def bound(frame: pd.DataFrame, n: int, sign: int) -> float:
        spread = frame.loc[n, "time_iqr_s"]
        spread = 0.0 if pd.isna(spread) else float(spread)
        return max(float(frame.loc[n, metric]) + sign * spread, 1e-12)

    ends = []
    for sign in (-1, 1):
        ours = {n: bound(mine, n, sign) for n in lengths}
        theirs = {n: bound(base, n, -sign) for n in lengths}
        n, _ = crossover_n(ours, theirs)
        ends.append(math.nan if n is None else n)
    return ends[0], ends[1]


def _wins(mine: pd.Series, base: pd.Series, metric: str) -> bool | None:
    mine_ok, base_ok = mine["status"] == "ok", base["status"] == "ok"
    if mine_ok and base_ok:
        return bool(mine[metric] < base[metric])
    if mine_ok and base["status"] in ("oom", "timeout", "skipped"):
        return True
    if base_ok and not mine_ok:
        return False
    return None


def longest_fit(frame: pd.DataFrame, group: Sequence[str] = GROUP) -> pd.DataFrame:
    """Per group: the largest n that ran ok, and the first status that stopped it (if any)."""
    keys = [g for g in group if g in frame.columns]
    rows = []
    for key, part in frame.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ok = part[part["status"] == "ok"]
        longest = int(ok["seq_len"].max()) if not ok.empty else math.nan
        failed = part[(part["status"] != "ok") & (part["seq_len"] > (longest if not ok.empty else -1))]
        stopped_by = failed.sort_values("seq_len")["status"].iloc[0] if not failed.empty else ""
        rows.append(dict(zip(keys, key, strict=True)) | {"longest_ok_n": longest, "stopped_by": stopped_by})
    return pd.DataFrame(rows)


# accuracy, recommendations, trade-offs ------------------------------------------------------------------
USABLE_ACCURACY = ("ok", "timeout")  # timeout stops training on the time budget; the best checkpoint's test stands
TASK_KEY = ("task", "seq_len")  # one task at one length; a suite may run a task at several


def usable_accuracy(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy rows whose test accuracy stands: status ok or timeout, with a test_acc."""
    if frame.empty:
        return frame
    return frame[frame["status"].isin(USABLE_ACCURACY) & frame["test_acc"].notna()]


# two-sided 95% Student-t quantiles by degrees of freedom; beyond 30 the normal's 1.96 is within 2%
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def ci95_halfwidth(values: Sequence[float]) -> float:
    """Half-width of the 95% t-interval of the mean; NaN with fewer than two values."""
    data = [float(v) for v in values if not math.isnan(float(v))]
    if len(data) < 2:
        return math.nan
    std = float(np.std(data, ddof=1))
    df = len(data) - 1
    return (_T975[df - 1] if df <= len(_T975) else 1.96) * std / math.sqrt(len(data))


def scaling_summary(frame: pd.DataFrame, *, baseline: str = BASELINE, group: Sequence[str] = GROUP) -> pd.DataFrame:
    """Per group: time and memory exponents with r², the crossover vs ``baseline``, and the longest n that fits."""
    keys = [g for g in group if g in frame.columns]
    columns = [*keys, "time_exponent", "time_r2", "memory_exponent", "memory_r2", "crossover_n", "always_ahead",
               "longest_ok_n", "stopped_by", "time_exponent_low", "time_exponent_high", "memory_exponent_low",
               "memory_exponent_high", "crossover_low", "crossover_high", "unstable_left_out",
               "uses_unstable"]  # fmt: skip
    if frame.empty:
        return pd.DataFrame(columns=columns)
    exps = scaling_exponents(frame, group=keys)
    wide = longest_fit(frame, group=keys)
    fields = {"exponent": "exponent", "r2": "r2", "exponent_low": "exponent_low", "exponent_high": "exponent_high"}
    for metric, name in (("time_median_s", "time"), ("peak_mem_bytes", "memory")):
        renamed = {k: f"{name}_{v}" for k, v in fields.items()}
        extra = ["unstable_left_out", "uses_unstable"] if name == "time" else []
        part = exps[exps["metric"] == metric][[*keys, *fields, *extra]] if not exps.empty else pd.DataFrame()
        part = part.rename(columns=renamed)
        wide = (
            wide.merge(part, on=keys, how="left")
            if not part.empty
            else wide.assign(**dict.fromkeys([*renamed.values(), *extra], math.nan))
        )
    cross = crossovers(frame, baseline=baseline, group=keys)
    if cross.empty:
        wide = wide.assign(crossover_n=math.nan, always_ahead=False, crossover_low=math.nan, crossover_high=math.nan)
    else:
        wide = wide.merge(
            cross[[*keys, "crossover_n", "always_ahead", "crossover_low", "crossover_high"]], on=keys, how="left"
        )
    return wide[columns]


def accuracy_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Per task × seq_len × spec: seeds run and usable, test accuracy mean, std, min, max and 95% t-interval.

    It keeps a task's lengths apart and counts only usable seeds (:func:`usable_accuracy`). ``test_ci95`` is
    the half-width of the 95% Student-t interval of the mean
    (NaN with fewer than two usable seeds); ``failures`` counts the statuses of the seeds that did not count.
    """
    columns = [*TASK_KEY, "spec", "family", "seeds_run", "seeds_ok", "test_mean", "test_std", "test_min", "test_max",
               "test_ci95", "val_mean", "majority_acc", "time_per_step_s", "peak_mem_bytes", "failures"]  # fmt: skip
    if frame.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (task, seq_len, spec), part in frame.groupby([*TASK_KEY, "spec"], sort=True, dropna=False):
        part = part.drop_duplicates("seed", keep="last")
        good = usable_accuracy(part)
        acc = good["test_acc"].astype(float)
        n = len(acc)
        bad = part.loc[~part.index.isin(good.index), "status"].value_counts().sort_index()
        rows.append({
            "task": task, "seq_len": seq_len, "spec": spec, "family": part["family"].iloc[-1],
            "seeds_run": len(part), "seeds_ok": n,
            "test_mean": float(acc.mean()) if n else math.nan,
            "test_std": float(acc.std(ddof=1)) if n >= 2 else math.nan,
            "test_min": float(acc.min()) if n else math.nan, "test_max": float(acc.max()) if n else math.nan,
            "test_ci95": ci95_halfwidth(acc.tolist()),
            "val_mean": float(good["val_acc"].astype(float).mean()) if n else math.nan,
            "majority_acc": float(part["majority_acc"].astype(float).mean()),
            "time_per_step_s": float(good["time_per_step_s"].astype(float).mean()) if n else math.nan,
            "peak_mem_bytes": float(good["peak_mem_bytes"].astype(float).max()) if n else math.nan,
            "failures": ", ".join(f"{status}×{count}" for status, count in bad.items()),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def accuracy_verdicts(
    frame: pd.DataFrame, *, tolerance_points: float = ACC_TOLERANCE_POINTS, baseline: str = BASELINE
) -> pd.DataFrame:
    """Per spec: is its test accuracy within ``tolerance_points`` of ``baseline`` on the tasks both ran?

    A task (at one length) counts when ``baseline`` learned it — its mean test accuracy over usable seeds
    beats the majority-class rate by more than ``tolerance_points`` (a task nobody learned says nothing
    about who keeps accuracy) — and the spec was trained on it (a row that is not ``skipped``). On such a
    task the spec's mean test accuracy over usable seeds must be at least the baseline's mean minus
    ``tolerance_points``/100; a task where none of its seeds is usable (diverged, oom, error) is a miss.
    ``verdict``: ``baseline`` (always, for the baseline itself), ``within``, ``below`` (missed on some task)
    or ``untested`` (no task to compare on). ``worst_gap_points`` is the spec's mean minus the baseline's on
    its worst counted task, in percentage points (-inf for a task it failed); ``detail`` lists every task,
    those not counted included.
    """
    columns = ["spec", "verdict", "tasks_compared", "worst_task", "worst_gap_points", "detail"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    spread = accuracy_spread(frame)
    tried = frame[frame["status"] != "skipped"].groupby([*TASK_KEY, "spec"]).size()
    base = spread[(spread["spec"] == baseline) & (spread["seeds_ok"] > 0)].set_index(list(TASK_KEY))
    learned = base["test_mean"] - base["majority_acc"].fillna(0.0) > tolerance_points / 100
    rows = []
    for spec in sorted(spread["spec"].unique()):
        mine = spread[spread["spec"] == spec].set_index(list(TASK_KEY))
        gaps: dict[str, float] = {}
        notes: list[str] = []
        for key in mine.index:
            task = f"{key[0]} (n={key[1]})"
            if key not in base.index or (*key, spec) not in tried.index:
                continue
            if not learned[key]:
                notes.append(f"{task}: not counted, {baseline} is within {tolerance_points:g} points of chance")
                continue
            mean = mine.loc[key, "test_mean"]
            gaps[task] = -math.inf if math.isnan(mean) else 100 * (mean - base.loc[key, "test_mean"])
        if spec == baseline:  # the reference keeps its own accuracy by definition, learned or not
            verdict = "baseline"
        elif not gaps:
            verdict = "untested"
        else:
            verdict = "within" if min(gaps.values()) >= -tolerance_points else "below"
        worst = min(gaps, key=gaps.__getitem__) if gaps else ""
        detail = [f"{task}: {'failed' if math.isinf(g) else f'{g:+.1f}'}" for task, g in gaps.items()] + notes
        rows.append({
            "spec": spec, "verdict": verdict, "tasks_compared": len(gaps), "worst_task": worst,
            "worst_gap_points": gaps[worst] if gaps else math.nan, "detail": "; ".join(detail),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def recommendations(
    complexity: pd.DataFrame,
    accuracy: pd.DataFrame,
    *,
    tolerance_points: float = ACC_TOLERANCE_POINTS,
    baseline: str = BASELINE,
    group: Sequence[str] = ("scope", "pass", "causal", "node_type"),
) -> pd.DataFrame:
    """Per group × measured n: the fastest and the leanest spec that fits (ran ok) and keeps accuracy.

    "Keeps accuracy" is :func:`accuracy_verdicts`' ``baseline`` or ``within``. ``fastest``/``leanest`` are
    missing (NaN) when nothing qualifies ("none fits"). ``faster_untested`` names the fastest spec without accuracy
    results when it beats the pick (or when there is no pick), ``faster_below`` the fastest one excluded for
    its accuracy under the same condition: what the table leaves out, and why.
    """
    keys = [g for g in group if g in complexity.columns]
    columns = [*keys, "seq_len", "fastest", "fastest_time_s", "leanest", "leanest_peak_bytes", "qualified_ok",
               "faster_untested", "faster_below"]  # fmt: skip
    if complexity.empty:
        return pd.DataFrame(columns=columns)
    verdicts = accuracy_verdicts(accuracy, tolerance_points=tolerance_points, baseline=baseline)
    verdict_of = dict(zip(verdicts["spec"], verdicts["verdict"], strict=True))
    latest = complexity.drop_duplicates([*keys, "spec", "seq_len"], keep="last")
    rows = []
    for key, part in latest.groupby([*keys, "seq_len"], sort=True, dropna=False):
        ok = part[(part["status"] == "ok") & part["time_median_s"].notna()]
        ok, _, _ = _trusted(ok)  # an unstable time picks nothing, unless nothing else ran at this n
        verdict = ok["spec"].map(lambda s: verdict_of.get(s, "baseline" if s == baseline else "untested"))
        good = ok[verdict.isin(["baseline", "within"])]
        fastest = good.loc[good["time_median_s"].idxmin()] if not good.empty else None
        with_mem = good[good["peak_mem_bytes"].notna()]
        leanest = with_mem.sort_values(["peak_mem_bytes", "time_median_s"]).iloc[0] if not with_mem.empty else None
        limit = fastest["time_median_s"] if fastest is not None else math.inf
        faster = {}
        for label in ("untested", "below"):
            others = ok[(verdict == label) & (ok["time_median_s"] < limit)]
            faster[label] = others.loc[others["time_median_s"].idxmin(), "spec"] if not others.empty else None
        rows.append(dict(zip([*keys, "seq_len"], key, strict=True)) | {
            "fastest": fastest["spec"] if fastest is not None else None,
            "fastest_time_s": fastest["time_median_s"] if fastest is not None else math.nan,
            "leanest": leanest["spec"] if leanest is not None else None,
            "leanest_peak_bytes": leanest["peak_mem_bytes"] if leanest is not None else math.nan,
            "qualified_ok": len(good),
            "faster_untested": faster["untested"],
            "faster_below": faster["below"],
        })  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def pareto_front(frame: pd.DataFrame, cost: str, value: str) -> pd.Series:
    """True for the rows no other row beats: none has lower-or-equal ``cost`` with a higher ``value``."""
    valid = frame[[cost, value]].dropna()
    order = valid.sort_values([cost, value], ascending=[True, False])
    best_before = order[value].cummax().shift(fill_value=-math.inf)
    return (order[value] > best_before).reindex(frame.index, fill_value=False)


def log_crossing(slower: tuple[float, float], faster: tuple[float, float]) -> float:
    """The n at which a time ratio (variant / baseline) crosses 1 between two lengths, on log-log axes.

    ``slower`` is (n, ratio ≥ 1), ``faster`` is (n, ratio < 1).
    """
    (n0, r0), (n1, r1) = slower, faster
    t = math.log(r0) / (math.log(r0) - math.log(r1))
    return math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0)))


def crossover_n(ours: Mapping[int, float], base: Mapping[int, float]) -> tuple[float | None, str]:
    """Where ``ours`` becomes faster than ``base`` for every larger measured n (log-interpolated).

    Returns (n, how): how is "always" (faster at every n; n is the smallest), "never" (not faster at the
    largest n; n is None), "crossing" (n interpolated), or "no data".
    """
    sizes = sorted(set(ours) & set(base))
    if not sizes:
        return None, "no data"
    faster = [ours[n] < base[n] for n in sizes]
    if all(faster):
        return float(sizes[0]), "always"
    if not faster[-1]:
        return None, "never"
    last_slow = max(i for i, f in enumerate(faster) if not f)
    a, b = sizes[last_slow], sizes[last_slow + 1]
    return log_crossing((a, ours[a] / base[a]), (b, ours[b] / base[b])), "crossing"
