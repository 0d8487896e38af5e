"""Is a timing trustworthy? One cell's reading summarised, the rules that make it suspect, and their thresholds.

A reading is suspect when its blocks spread too much (``time_cv``), when the evidence says the CPU was not
the worker's (``wait_fraction``), or when it sits far off its own variant's series (a robust log–log line
through the variant's other stable lengths). The series rule is a trigger for a re-measure, not a verdict:
a cache cliff is real, so a reading reproduced in a fresh worker with clean evidence stands.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from attnbench.core.errors import UserError
from attnbench.core.robust import theil_sen
from attnbench.measure.cells import Timing
from attnbench.measure.evidence import spread, wait_fraction

MIN_SERIES_POINTS = 2  # other stable lengths a series check needs


@dataclass(frozen=True)
class StabilityRules:
    """Every threshold of the trust rules, in one place; the report states them."""

    remeasure: int = 2  # re-measures of a suspect cell, each in a fresh worker, later in the sweep
    max_time_cv: float = 0.15  # IQR / median of a cell's blocks above this: suspect
    max_wait_fraction: float = 0.05  # run-queue delay over the worker's thread-time above this: suspect
    series_factor: float = 2.0  # more than this factor off the variant's robust log–log line: re-measure
    reproduce_factor: float = 1.25  # two clean readings within this factor of each other: a real effect
    max_remeasure_share: float = 0.25  # re-measures in a sweep at most this share of its cells (+2): bounds the time

    def __post_init__(self) -> None:
        if self.remeasure < 0:
            raise UserError(f"--remeasure must be >= 0, got {self.remeasure}")
        for name in ("max_time_cv", "max_wait_fraction", "max_remeasure_share"):
            if getattr(self, name) < 0:
                raise UserError(f"stability {name} must be >= 0, got {getattr(self, name)}")
        for name in ("series_factor", "reproduce_factor"):
            if getattr(self, name) <= 1:
                raise UserError(f"stability {name} must be > 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: StabilityRules | Mapping[str, Any] | None) -> StabilityRules:
        if value is None:
            return cls()
        if isinstance(value, StabilityRules):
            return value
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in value.items() if k in known})

    def remeasure_budget(self, cells: int) -> int:
        return int(self.max_remeasure_share * cells) + 2 if self.remeasure else 0


@dataclass(frozen=True)
class Reading:
    """One attempt at a cell, summarised: what complexity.csv records of the attempt it keeps."""

    time_median_s: float
    time_min_s: float
    time_cv: float
    wait_fraction: float | None  # None: neither schedstat nor CPU pressure was readable

    @classmethod
    def of(cls, timing: Timing, threads: int) -> Reading:
        blocks = list(timing.raw_times_s)
        return cls(
            time_median_s=timing.time_median_s,
            time_min_s=min(blocks) if blocks else timing.time_median_s,
            time_cv=spread(blocks),
            wait_fraction=wait_fraction(timing.blocks, threads) if timing.blocks else None,
        )

    def doubts(self, rules: StabilityRules) -> list[str]:
        """Why the reading itself (its blocks and evidence) is suspect; empty when it looks clean."""
        found = []
        if self.time_cv > rules.max_time_cv:
            found.append(f"blocks spread {self.time_cv:.0%} > {rules.max_time_cv:.0%}")
        if self.wait_fraction is not None and self.wait_fraction > rules.max_wait_fraction:
            found.append(f"waited for a CPU {self.wait_fraction:.0%} > {rules.max_wait_fraction:.0%}")
        return found

    def badness(self) -> tuple[float, float]:
        """Orders attempts by evidence: least waiting, then tightest blocks (unknown waiting ranks as clean)."""
        return (self.wait_fraction or 0.0, self.time_cv)


def off_series(n: int, time_s: float, others: Mapping[int, float], factor: float) -> str | None:
    """Why ``time_s`` at ``n`` is off the robust log–log line through the variant's ``others`` (None if on it)."""
    points = {k: v for k, v in others.items() if k != n and v > 0}
    if len(points) < MIN_SERIES_POINTS or time_s <= 0:
        return None
    xs = [math.log(k) for k in points]
    slope, intercept = theil_sen(xs, [math.log(v) for v in points.values()])
    if math.isnan(slope):
        return None
    expected = math.exp(intercept + slope * math.log(n))
    ratio = time_s / expected
    if ratio > factor or ratio < 1 / factor:
        return f"{ratio:.1f}× its series' line"
    return None


def reproduced(readings: Sequence[Reading], factor: float) -> bool:
    """Two clean-evidence readings that agree within ``factor``: the value is the cell's, not the machine's."""
    medians = sorted(r.time_median_s for r in readings)
    return any(b <= a * factor for a, b in itertools.pairwise(medians))
