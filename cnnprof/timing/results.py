"""What a benchmark returns: the raw per-call latencies of one (model, batch size), the environment they
were measured in, and the statistics derived from them (cnnprof.timing.stats). Data only: nothing here
measures or prints, and nothing imports torch."""
from __future__ import annotations

import platform
from dataclasses import dataclass, field

from cnnprof.counting.conventions import to_flops
from cnnprof.timing import stats
from cnnprof.results import Printable


@dataclass(frozen=True)
class Environment:
    """What the numbers were measured on and with."""

    torch_version: str
    device: str
    device_name: str
    threads: int
    dtype: str
    channels_last: bool
    compiled: bool
    cudnn_benchmark: bool
    python: str = platform.python_version()


@dataclass(frozen=True)
class TypeTiming:
    """Measured time and counted cost of one layer type, summed over the breakdown runs' average call."""

    type: str
    macs: int
    ops: int
    time_s: float
    calls: int


@dataclass(frozen=True)
class BenchResult(Printable):
    """Raw per-call latencies of one (model, batch size) and the statistics derived from them."""

    model: str
    device: str
    batch_size: int
    input_shape: tuple[int, ...]
    dtype: str
    env: Environment
    status: str = "ok"  # ok | oom | error | interrupted
    error: str | None = None
    times_s: tuple[float, ...] = ()
    cold_s: float | None = None
    compile_s: float | None = None
    warmup_runs: int = 0
    macs: int | None = None  # conv-scope MACs of one forward pass at this batch size
    peak_allocated: int | None = None  # CUDA bytes, max after warm-up
    peak_reserved: int | None = None
    breakdown: tuple[TypeTiming, ...] = field(default=())
    requested_batch_size: int | None = None  # differs from batch_size when auto_batch halved it
    rounds: int = 0  # interleaved rounds the samples come from (0: timed on its own)
    needed_bytes: int | None = None  # estimated memory of the configuration (parameters + activations)
    mode: str = "infer"  # infer: forward passes were timed; train: training steps
    optimizer: str | None = None  # the optimizer of a training step
    measured_peak: int | None = None  # bytes, one call after the warm-up (cnnprof.timing.peak says how)
    predicted_peak: int | None = None  # bytes, the same call simulated on meta (cnnprof.counting.footprint)

    @property
    def runs(self) -> int:
        return len(self.times_s)

    def quantile(self, q: float) -> float | None:
        """Linearly interpolated quantile of the per-call times (numpy's default method)."""
        return stats.quantile(self.times_s, q)

    @property
    def median_s(self) -> float | None:
        return stats.median(self.times_s)

    @property
    def median_ms(self) -> float | None:
        return None if self.median_s is None else 1e3 * self.median_s

    @property
    def mean_s(self) -> float | None:
        return sum(self.times_s) / len(self.times_s) if self.times_s else None

    @property
    def min_s(self) -> float | None:
        return min(self.times_s) if self.times_s else None

    @property
    def iqr_s(self) -> float | None:
        return stats.iqr(self.times_s)

    @property
    def noisy(self) -> bool:
        return stats.is_noisy(self.times_s)

    @property
    def throughput(self) -> float | None:
        """Samples per second at the median latency."""
        return self.batch_size / self.median_s if self.median_s else None

    def gflops(self, convention: str = "macc") -> float | None:
        """Achieved GFLOP/s of the conv-scope FLOPs at the median latency."""
        if not self.median_s or self.macs is None:
            return None
        return to_flops(self.macs, 0, convention) / self.median_s / 1e9

    def latency_ms(self) -> dict[str, float | None]:
        """Median, mean, min, p90, p99 and IQR of the per-call times, in milliseconds."""
        ms = lambda s: None if s is None else 1e3 * s  # noqa: E731
        return {"median": ms(self.median_s), "mean": ms(self.mean_s), "min": ms(self.min_s),
                "p90": ms(self.quantile(0.9)), "p99": ms(self.quantile(0.99)), "iqr": ms(self.iqr_s)}
