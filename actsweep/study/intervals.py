"""Interval arithmetic of the report: t-intervals of a mean, paired differences, and the direction
that an interval allows one to claim. Pure functions of numbers, tested against scipy and by hand."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided t-interval; `low`/`high` are NaN when n < 2."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int, signed: bool = False) -> str:
        """`2.480 [2.351, 2.609]`, `+0.042 [−0.010, +0.094]` when signed, `2.480 [n=1]` for one value."""
        if not math.isfinite(self.mean):
            return ""
        spec = f"{'+' if signed else ''}.{digits}f"
        if self.n < 2:
            return f"{self.mean:{spec}} [n=1]"
        return f"{self.mean:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of the finite `values` and its Student-t interval: mean ± t(n−1) · s / √n."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def paired_differences(a: Mapping[int, float], b: Mapping[int, float]) -> dict[int, float]:
    """a − b for every seed that both sides finished with a finite value, in seed order."""
    return {seed: a[seed] - b[seed] for seed in sorted(set(a) & set(b))
            if math.isfinite(a[seed]) and math.isfinite(b[seed])}


def direction(interval: Interval, a: str, b: str) -> str:
    """What the interval of a − b lets one claim: `a lower`, `b lower`, or nothing (`unresolved`)."""
    if interval.n >= 2 and interval.high < 0:
        return f"{a} lower"
    if interval.n >= 2 and interval.low > 0:
        return f"{b} lower"
    return "unresolved"
