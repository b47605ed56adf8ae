"""Design-space statistics (pycls, Radosavovic et al. 2019): empirical distributions of each metric over samples.

`cnnprof search --stats` draws uniform random samples (within the constraints, as pycls samples within complexity
bounds), counts each as a sum of memoised part counts (cnnprof.design.memo) and describes the space by the
quantiles and EDFs of params, MACs, acts and, with a device profile, predicted latency.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnprof.design.metrics import metric_value


@dataclass(frozen=True)
class Distribution:
    """Empirical distribution of one metric over the valid samples (pycls-style design-space statistics)."""

    metric: str
    values: tuple[float, ...]  # sorted

    def quantile(self, q: float) -> float:
        """The q-quantile (0 to 1), interpolated linearly between the sorted values."""
        xs = self.values
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def distributions(result: Any) -> list[Distribution]:
    """Empirical distributions of the count metrics over the valid trials (acts when counted)."""
    valid = [t.point for t in result.trials if t.point.ok]
    out = []
    for metric in ("params", "macs", "flops", "acts", "latency"):
        values = [metric_value(p, metric, result.convention) for p in valid]
        if values and all(v is not None for v in values):
            if metric == "flops" and result.convention == "macc" and result.settings.scope == "conv":
                continue  # identical to macs
            out.append(Distribution(metric, tuple(sorted(values))))
    return out
