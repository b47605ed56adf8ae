"""What a design point costs: one evaluation (params, MACs, acts, latency) and the metric registry.

Add a metric by adding one entry to METRICS. "latency" is measured (`Settings.bench`) or predicted from a
device profile without running the model (`Settings.profile`, cnnprof.predict.latency), as the user asks.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from cnnprof.errors import CnnprofError, first_line, parameter


@dataclass(frozen=True)
class Point:
    """One evaluated configuration: knob values and its raw counts (None where not measured)."""

    knobs: tuple[tuple[str, Any], ...]
    status: str = "ok"  # ok | invalid (the config or model failed to build/run) | error (measurement failed)
    error: str | None = None
    params: int | None = None
    macs: int | None = None  # multiply-accumulates in the requested scope
    other_ops: int | None = None  # non-MAC ops in the requested scope (scope "all")
    acts: int | None = None  # output activations (pycls's definition)
    latency_s: float | None = None  # measured median latency (Settings.bench) or predicted (Settings.profile)
    extra: tuple[tuple[str, Any], ...] = field(default=())  # further measurements (e.g. a predicted latency)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def knob(self, name: str) -> Any:
        return dict(self.knobs)[name]


@dataclass(frozen=True)
class Metric:
    """A named cost: how to read it from a Point, its unit, and what must be measured to get it."""

    name: str
    unit: str  # "" for counts (K/M/G suffixes), "s" for times (ms/us suffixes)
    need: str  # "count" (meta-device counting) or "bench" (measured on a device, or predicted)
    value: Callable[[Point, str], float | None]  # (point, convention) -> value
    help: str


def _flops_or_macs(p: Point, convention: str) -> float | None:
    from cnnprof.counting.conventions import to_flops

    return None if p.macs is None else to_flops(p.macs, p.other_ops or 0, convention)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("params", "", "count", lambda p, c: p.params, "parameters"),
    Metric("macs", "", "count", lambda p, c: p.macs, "multiply-accumulates (in the counting `scope`)"),
    Metric("flops", "", "count", _flops_or_macs, "FLOPs under the `convention`, in the `scope`"),
    Metric("acts", "", "count", lambda p, c: p.acts, "output activations of conv/linear layers"),
    Metric("latency", "s", "bench", lambda p, c: p.latency_s,
           "median latency: measured (`bench`, runs the model) or predicted (`predict`, from the device profile)"),
)}


def get_metric(name: str) -> Metric:
    """Metric by name; unknown names raise listing the valid ones."""
    if name not in METRICS:
        raise CnnprofError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    return METRICS[name]


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Settings:
    """How points are measured: counting scope and input, and the benchmark protocol when latency is needed.

    Every point runs on `inputs` (InputSpecs: shapes, dtypes, names; used as given) or else on the model's
    declared input with `batch_size` and `resolution` applied (cnnprof.inputs.input_specs), the same inputs
    for its count, its predicted latency and its benchmark."""

    scope: str = "conv"
    resolution: int | None = None
    batch_size: int = 1
    inputs: tuple[Any, ...] | None = None  # explicit InputSpecs (cnnprof.inputs), or None: the declared input
    bench: bool = False
    device: str = "cpu"
    warmup: float = 0.2
    min_time: float = 0.5
    min_runs: int = 5
    threads: int | None = None
    profile: Any = None  # a DeviceProfile: latency is predicted from it (no run) when bench is off


def evaluate(spec: Any, overrides: Mapping[str, Any], settings: Settings = Settings(),
             knobs: Mapping[str, Any] | None = None) -> Point:
    """Build `spec` with `overrides` on the meta device and count it (one op trace, which also gives the
    predicted latency with settings.profile); bench it when settings.bench. Every input the model takes, with
    its dtype, is used by all three (see Settings).

    A config or model that fails (invalid knob combination, shape error) gives status "invalid" with
    its one-line message instead of raising, so one bad point never loses a sweep or a search."""
    from cnnprof.counting.flops import flop_count
    from cnnprof.counting.params import count_params
    from cnnprof.counting.run import trace_model
    from cnnprof.inputs import input_specs
    from cnnprof.models.spec import resolve

    knobs = tuple((knobs if knobs is not None else overrides).items())
    try:
        source = resolve(spec, overrides)
        model = source.build("meta")
        specs = input_specs(source, model, settings.batch_size, settings.resolution, settings.inputs)
        inputs = list(specs) if specs is not None else None  # None: a nested declared input, as declared
        trace = trace_model(replace(source, module=model), inputs, traffic=settings.profile is not None)
        fc = flop_count(trace, settings.scope)
        point = Point(knobs, params=count_params(model).total, macs=fc.macs, other_ops=fc.other_ops,
                      acts=fc.acts)
    except CnnprofError as exc:
        return Point(knobs, status="invalid", error=first_line(exc))
    except Exception as exc:  # noqa: BLE001 - a user's model failing is reported as theirs, per point
        return Point(knobs, status="invalid", error=f"{type(exc).__name__}: {first_line(exc)}")
    if settings.bench:
        point = _bench(point, source, inputs, settings)
    elif settings.profile is not None:
        from cnnprof.counting.traffic import memory_profile
        from cnnprof.predict.latency import predict_ops

        prediction = predict_ops(memory_profile(trace), settings.profile, "float32")
        point = replace(point, latency_s=prediction.best_s())
    return point


def _bench(point: Point, source: Any, inputs: list | None, s: Settings) -> Point:
    from cnnprof.timing.runtime import benchmark

    result = benchmark(source, inputs=inputs, device=s.device, threads=s.threads, warmup=s.warmup,
                       min_time=s.min_time, min_runs=s.min_runs)
    if result.status != "ok":
        return replace(point, status="error", error=result.error)
    return replace(point, latency_s=result.median_s)


def metric_value(point: Point, metric: str, convention: str = "macc") -> float | None:
    """The value of a metric at a point (None when it was not measured or the point failed)."""
    return get_metric(metric).value(point, convention) if point.ok else None


def counted(metric: str, settings: Settings) -> bool:
    """Whether a metric is known without running the model: a count, or a latency predicted from a profile."""
    return get_metric(metric).need == "count" or (not settings.bench and settings.profile is not None)


def require(metric: str, settings: Settings) -> None:
    """Raise (exit 2) when a metric cannot be had with these settings."""
    m = get_metric(metric)
    if m.need == "bench" and not settings.bench and settings.profile is None:
        raise CnnprofError(f"metric {metric!r} needs {parameter('bench')} (measure it) or {parameter('predict')} "
                           f"(predict it from the device profile)")


# ----------------------------------------------------------------------------- constraints

_UNITS = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
_NOT_FINITE = re.compile(r"^\s*[a-z_]+\s*(?:<=|>=|<|>)\s*([+-]?(?:inf(?:inity)?|nan))\s*[a-zA-Zµ]*\s*$", re.I)
_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|<|>)\s*([0-9.eE+-]+)\s*([a-zA-Zµ]*)\s*$")


@dataclass(frozen=True)
class Constraint:
    """metric op bound, e.g. macs <= 400e6 or latency <= 0.015 (seconds)."""

    metric: str
    op: str
    bound: float
    text: str

    def violation(self, value: float) -> float:
        """<= 0 when satisfied (Optuna's constraints_func convention), else how far off, relative to the bound."""
        scale = abs(self.bound) or 1.0
        return (value - self.bound) / scale if self.op in ("<=", "<") else (self.bound - value) / scale

    def satisfied(self, value: float | None) -> bool:
        if value is None:
            return False
        return {"<=": value <= self.bound, "<": value < self.bound,
                ">=": value >= self.bound, ">": value > self.bound}[self.op]


def parse_constraint(text: str) -> Constraint:
    """'macs<=400M', 'params<=5M', 'latency<=15ms' -> Constraint; anything else raises one line."""
    match = _CONSTRAINT.match(text)
    given = parameter("constraint", repr(text))
    if _NOT_FINITE.match(text):
        raise CnnprofError(f"{given}: the bound must be a finite number, got {_NOT_FINITE.match(text).group(1)!r}")
    if not match:
        raise CnnprofError(f"{given}: expected METRIC<=VALUE[UNIT], e.g. macs<=400M, params<=5M, "
                           f"latency<=15ms")
    name, op, number, unit = match.groups()
    metric = get_metric(name) if name in METRICS else None
    if metric is None:
        raise CnnprofError(f"{given}: unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    units = _TIME_UNITS if metric.unit == "s" else _UNITS
    if unit not in units or (metric.unit == "s" and not unit):
        raise CnnprofError(f"{given}: unit {unit or '(none)'!r} does not fit {name}; use one of "
                           f"{', '.join(u for u in units if u)}")
    try:
        bound = float(number) * units[unit]
    except ValueError:
        raise CnnprofError(f"{given}: {number!r} is not a number") from None
    if not math.isfinite(bound):  # 1e999 reads as inf
        raise CnnprofError(f"{given}: the bound must be a finite number, got {number!r}")
    if bound < 0 or (bound == 0 and op == "<"):  # every metric counts or times something: never negative
        raise CnnprofError(f"{given}: no model can meet it ({name} is never negative)")
    return Constraint(name, op, bound, text.strip())
