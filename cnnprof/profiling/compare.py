"""Models side by side: one Profile each, ratios to the first, optionally timed interleaved in rounds.

`compare(["resnet50", "resnext50"])` returns a `Comparison` that prints as `cnnprof compare`'s table and
whose `to_dict()` is its JSON rows. The CLI runs the same steps model by model (so that one failing model
does not lose the others) and then calls `Comparison.timed` for `--bench`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from cnnprof.errors import CnnprofError
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
    timing: tuple[dict[str, Any], ...] = ()  # per model: latency, ratio interval, status (after `timed`)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # row label -> its settings

    @property
    def predicted(self) -> bool:
        return any(p.prediction is not None for p in self.profiles)

    def rows(self) -> list[dict[str, Any]]:
        """One row per model with the ratios to the first (and the timing, if measured)."""
        rows = [{**p.row(), **(self.timing[i] if i < len(self.timing) else {})} for i, p in enumerate(self.profiles)]
        _ratios(rows)
        return rows

    def report(self):
        from cnnprof.report.tables import compare_report

        report = compare_report(self.rows(), self.convention, self.scope, bool(self.timing), self.predicted)
        return with_overrides(report, self.overrides)

    def timed(self, settings: BenchSettings, stop: Callable[[], bool] | None = None) -> "Comparison":
        """The comparison with every model timed, interleaved in rotating rounds (cnnprof.timing.interleave)."""
        from cnnprof.models.spec import resolve
        from cnnprof.timing.interleave import interleaved_benchmark

        sources = [resolve(p.flops.model) if p.source is None else p.source for p in self.profiles]
        shapes = [p.flops.inputs or p.flops.input_shape for p in self.profiles]
        results, ratios = interleaved_benchmark(sources, shapes, settings.device, stop=stop, **settings.options())
        timing = [_timing(r, q, settings.device, first=i == 0) for i, (r, q) in enumerate(zip(results, ratios))]
        for t in timing:
            t["throughput_ratio"] = (t["throughput"] / timing[0]["throughput"]
                                     if t["throughput"] and timing[0]["throughput"] else None)
        return replace(self, timing=tuple(timing))

    def failures(self) -> list[tuple[str, str, str | None]]:
        """(model, status, error) of every model whose timing did not succeed."""
        return [(p.model, t["bench_status"], t["bench_error"]) for p, t in zip(self.profiles, self.timing)
                if t["bench_status"] != "ok"]


def _timing(r: Any, q: Any, device: str, first: bool) -> dict[str, Any]:
    """The row fields of one model's interleaved timing (r: BenchResult, q: its RatioStat or None)."""
    return dict(device=device, latency_ms=r.median_ms, throughput=r.throughput, bench_status=r.status,
                bench_error=r.error, noisy=r.noisy, rounds=r.rounds,
                latency_ratio_interval=None if q is None else {"low": q.low, "high": q.high,
                                                               "measurable": q.measurable},
                latency_ratio=q.median if q is not None else 1.0 if first and r.median_ms else None)


def _ratios(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    ref = rows[0]
    for row in rows:
        for key in ("params", "flops", "macs"):
            row[f"{key}_ratio"] = row[key] / ref[key] if ref[key] else None
        if "predicted_ms" in row:
            row["predicted_ratio"] = row["predicted_ms"] / ref["predicted_ms"] if ref.get("predicted_ms") else None


def with_overrides(report, by_label: Mapping[str, Mapping[str, Any]]):
    """Add each row's effective overrides (`overrides`, by row label) as a field after `model`: a mapping in
    the JSON rows, key=value,... text in the CSV rows."""
    tables, json_rows, csv_rows = report
    for rows, as_text in ((json_rows, False), (csv_rows, True)):
        for i, row in enumerate(rows):
            if row.get("model") in by_label and "overrides" not in row:
                o = by_label[row["model"]]
                value = ",".join(f"{k}={v}" for k, v in o.items()) if as_text else dict(o)
                items = list(row.items())
                rows[i] = dict(items[:1] + [("overrides", value)] + items[1:])
    return tables, json_rows, csv_rows


def compare(models: Sequence[Any], *, convention: str = "macc", scope: str = "conv", batch_size: int | None = None,
            resolution: int | None = None, inputs: Any = None, device_profile: Any = None,
            bench: BenchSettings | None = None) -> Comparison:
    """Compare models (specs or nn.Modules): params, FLOPs, acts, MACs/param, ratios to the first; predicted
    latency with a `device_profile`, measured latency (interleaved rounds) with `bench`."""
    from cnnprof.profiling.profile import profile

    if len(models) < 2:
        raise CnnprofError("compare needs at least two models")
    profiles = tuple(profile(m, inputs, batch_size=batch_size, resolution=resolution, scope=scope,
                             convention=convention, device_profile=device_profile) for m in models)
    comparison = Comparison(profiles, convention, scope)
    return comparison.timed(bench) if bench is not None else comparison
