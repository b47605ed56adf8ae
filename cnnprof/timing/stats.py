"""Statistics of timed samples, one implementation for every measurement (torch-free).

Quantiles interpolate linearly between order statistics (numpy's default method, and statistics.quantiles'
"inclusive" one), so the median of an even count is the mean of the two middle samples. A result is noisy
when its IQR exceeds 10% of its median (torch.utils.benchmark's rule). Latency ratios between models come
with a 95% percentile-bootstrap interval of their median, seeded so that a report is reproducible.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

NOISY_IQR = 0.10  # flag results whose IQR exceeds 10% of the median (torch.utils.benchmark's rule)
RESAMPLES = 2000


def quantile(xs: Sequence[float], q: float) -> float | None:
    """Linearly interpolated quantile of `xs` (numpy's default method); None for no samples."""
    if not xs:
        return None
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(xs: Sequence[float]) -> float | None:
    """Median of `xs` (the mean of the two middle samples of an even count); None for no samples."""
    return quantile(xs, 0.5)


def iqr(xs: Sequence[float]) -> float | None:
    """Interquartile range of `xs`; None for no samples."""
    return None if not xs else quantile(xs, 0.75) - quantile(xs, 0.25)


def is_noisy(xs: Sequence[float]) -> bool:
    """True when the IQR of `xs` exceeds NOISY_IQR of their median."""
    return bool(xs) and iqr(xs) > NOISY_IQR * median(xs)


@dataclass(frozen=True)
class RatioStat:
    """Latency ratio of one model to the reference, from per-round ratios."""

    rounds: tuple[float, ...]
    median: float
    low: float  # 95% bootstrap interval of the median
    high: float

    @property
    def measurable(self) -> bool:
        """False when the interval includes 1.0: no measurable difference."""
        return not self.low <= 1.0 <= self.high

    @property
    def iqr(self) -> float:
        return iqr(self.rounds)


def ratio_stat(ratios: Sequence[float], resamples: int = RESAMPLES, seed: int = 0) -> RatioStat:
    """Median of per-round ratios and a percentile-bootstrap 95% interval of that median (fixed seed)."""
    xs = tuple(ratios)
    rng = random.Random(seed)
    meds = sorted(median(rng.choices(xs, k=len(xs))) for _ in range(resamples))
    lo, hi = meds[int(0.025 * (resamples - 1))], meds[int(round(0.975 * (resamples - 1)))]
    return RatioStat(xs, median(xs), lo, hi)
