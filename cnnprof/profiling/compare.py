"""Models side by side: one Profile each, ratios to the first, optionally timed interleaved in rounds.

`compare(["resnet50", "resnext50"])` returns a `Comparison` that prints as `cnnprof compare`'s table and
whose `to_dict()` is its JSON rows. The CLI runs the same steps model by model (so that one failing model
does not lose the others) and then calls `Comparison.timed` for `--bench`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from cnnprof.errors import CnnprofError, parameter
from cnnprof.results import Printable


@dataclass(frozen=True)
class BenchSettings:
    """How `Comparison.timed` measures: device, dtype and the timing protocol (see cnnprof.timing)."""

    device: str = "cpu"
    dtype: str = "float32"
    channels_last: bool = False
    threads: int | None = None
    warmup: float = 0.5
    min_time: float = 1.0
    min_runs: int = 5

    def options(self) -> dict[str, Any]:
        """Keyword arguments of cnnprof.timing.interleave.interleaved_benchmark."""
        return dict(dtype=self.dtype, channels_last=self.channels_last, threads=self.threads, warmup=self.warmup,
                    min_time=self.min_time, min_runs=self.min_runs)


@dataclass(frozen=True)
class Comparison(Printable):
    """Profiles of several models, the first the reference; with `timed`, measured latency too."""

    profiles: tuple[Any, ...]  # cnnprof.profiling.profile.Profile
    convention: str = "macc"
    scope: str = "conv"
    bench: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None  # (BenchResults, RatioStats) after `timed`
    device: str = "cpu"  # where `bench` was measured
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # row label -> its settings

    @property
    def predicted(self) -> bool:
        return any(p.prediction is not None for p in self.profiles)

    def report(self):
        from cnnprof.report.compare import compare_report, compare_rows, with_overrides

        predictions = [p.prediction for p in self.profiles] if self.predicted else None
        rows = compare_rows([(p.flops, p.params.total) for p in self.profiles], self.convention, predictions,
                            self.bench, self.device)
        train = any(p.flops.mode == "train" for p in self.profiles)
        return with_overrides(compare_report(rows, self.convention, self.scope, self.bench is not None,
                                             self.predicted, mode="train" if train else "infer"), self.overrides)

    def timed(self, settings: BenchSettings, stop: Callable[[], bool] | None = None) -> "Comparison":
        """The comparison with every model timed, interleaved in rotating rounds (cnnprof.timing.interleave)."""
        from cnnprof.models.spec import resolve
        from cnnprof.timing.interleave import interleaved_benchmark

        sources = [resolve(p.flops.model) if p.source is None else p.source for p in self.profiles]
        shapes = [p.flops.inputs or p.flops.input_shape for p in self.profiles]
        stop_rule = {} if stop is None else {"stop": stop}
        results, ratios = interleaved_benchmark(sources, shapes, settings.device, **stop_rule, **settings.options())
        return replace(self, bench=(tuple(results), tuple(ratios)), device=settings.device)

    def failures(self) -> list[tuple[str, str, str | None]]:
        """(model, status, error) of every model whose timing did not succeed."""
        return [(r.model, r.status, r.error) for r in (self.bench[0] if self.bench else ()) if r.status != "ok"]


def compare(models: Sequence[Any], *, convention: str = "macc", scope: str = "conv", batch_size: int | None = None,
            resolution: int | None = None, inputs: Any = None, device_profile: Any = None,
            bench: BenchSettings | None = None, mode: str = "infer",
            frozen: Sequence[str] | None = None) -> Comparison:
    """Compare models (specs or nn.Modules): params, FLOPs, acts, MACs/param, ratios to the first; predicted
    latency with a `device_profile`, measured latency (interleaved rounds) with `bench`; `mode="train"`: the FLOPs
    of one training step (forward and backward) of each, `frozen` as in cnnprof.profile."""
    from cnnprof.profiling.profile import profile

    if len(models) < 2:
        raise CnnprofError("compare needs at least two models")
    if mode == "train" and bench is not None:
        raise CnnprofError(f"measured latency is of a forward pass; `bench` does not apply with "
                           f"{parameter('mode', 'train')}")
    profiles = tuple(profile(m, inputs, batch_size=batch_size, resolution=resolution, scope=scope,
                             convention=convention, device_profile=device_profile, mode=mode, frozen=frozen)
                     for m in models)
    comparison = Comparison(profiles, convention, scope)
    return comparison.timed(bench) if bench is not None else comparison
