"""Pure functions on result DataFrames: scaling exponents, crossovers, the longest n that fits."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

GROUP = ("spec", "scope", "pass", "causal")
TAIL_POINTS = 4  # exponents are fitted over the largest lengths, where the asymptotic term dominates
MIN_POINTS = 3


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"] if "status" in frame.columns else frame


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


def scaling_exponents(
    frame: pd.DataFrame,
    metrics: Sequence[str] = ("time_median_s", "peak_mem_bytes"),
    *,
    tail: int = TAIL_POINTS,
    group: Sequence[str] = GROUP,
) -> pd.DataFrame:
    """One row per group × metric: the log-log slope over the ``tail`` largest ok lengths, with its r²."""
    rows = []
    keys = [g for g in group if g in frame.columns]
    for key, part in ok_rows(frame).groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            points = part[["seq_len", metric]].dropna()
            points = points[points[metric] > 0].sort_values("seq_len").drop_duplicates("seq_len", keep="last")
            points = points.tail(tail)
            record = dict(zip(keys, key, strict=True)) | {"metric": metric, "points": len(points)}
            if len(points) >= MIN_POINTS:
                slope, _, r2 = fit_power_law(points["seq_len"], points[metric])
                record |= {"exponent": slope, "r2": r2, "n_min": int(points["seq_len"].min()),
                           "n_max": int(points["seq_len"].max())}  # fmt: skip
            else:
                record |= {"exponent": math.nan, "r2": math.nan, "n_min": math.nan, "n_max": math.nan}
            rows.append(record)
    return pd.DataFrame(rows)


def crossovers(
    frame: pd.DataFrame, *, baseline: str = "softmax", metric: str = "time_median_s", group: Sequence[str] = GROUP
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
            record = dict(zip(context, ctx_key, strict=True)) | {
                "spec": spec,
                "baseline": baseline,
                "crossover_n": crossover,
                "always_ahead": bool(decided) and crossover == decided[0][0],
                "speedup_at_largest_common_n": ratio_at_max,
            }
            rows.append(record)
    return pd.DataFrame(rows)


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
