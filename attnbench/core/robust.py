"""Robust straight lines for log–log scaling fits: Theil–Sen with a bootstrap interval.

Noise on a deterministic computation only adds time, so one disturbed length can drag a least-squares
slope anywhere; the median of pairwise slopes ignores a minority of such points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 400
CONFIDENCE = 0.95


@dataclass(frozen=True)
class RobustLine:
    slope: float
    intercept: float
    slope_low: float  # the 95% bootstrap interval of the slope (NaN below three points)
    slope_high: float


def theil_sen(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Median of the pairwise slopes, and the median intercept under it."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(xs), k=1)
    apart = xs[j] != xs[i]
    if not apart.any():
        return math.nan, math.nan
    slope = float(np.median((ys[j] - ys[i])[apart] / (xs[j] - xs[i])[apart]))
    return slope, float(np.median(ys - slope * xs))


def robust_line(
    x: Sequence[float], y: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> RobustLine:
    """Theil–Sen through (x, y) with a percentile bootstrap over the points (resampled with replacement)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    slope, intercept = theil_sen(xs, ys)
    if len(xs) < 3 or math.isnan(slope):
        return RobustLine(slope, intercept, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    slopes = []
    for _ in range(resamples):
        pick = rng.integers(0, len(xs), len(xs))
        if len(set(xs[pick])) >= 2:
            slopes.append(theil_sen(xs[pick], ys[pick])[0])
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(slopes, [tail, 100 - tail])
    return RobustLine(slope, intercept, float(min(low, slope)), float(max(high, slope)))


def power_law(n: Sequence[float], t: Sequence[float], **kwargs: int) -> RobustLine:
    """:func:`robust_line` of log t against log n: the slope is the scaling exponent."""
    return robust_line(np.log(np.asarray(n, dtype=float)), np.log(np.asarray(t, dtype=float)), **kwargs)
