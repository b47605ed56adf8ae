"""Latency prediction from per-op costs, at two levels:

(a) roofline: every op takes max(FLOPs / peak, bytes / bandwidth) plus the device's per-op dispatch
    overhead (Williams et al., "Roofline", 2009);
(b) calibrated: every op type (dense / pointwise / depthwise / grouped conv, linear, batch / layer
    norm, cheap / transcendental activation, element-wise, windowed / global pooling, memory copy) has
    its own t = overhead + FLOPs / rate + bytes / bandwidth, fitted (non-negative least squares on
    relative error) to micro-benchmarks of single layers run on this device, an op-level lookup in
    the spirit of FBNet and nn-Meter; plus the measured cost of every module call. The micro-benchmark
    shapes are a fixed synthetic grid, not layers taken from the zoo, so no model the predictor is
    judged on is used to fit it. FLOPs are in the nvidia convention (1 MAC = 2 FLOPs).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any, Callable, Sequence

from cnnprof.predict.calibration import calibrate  # noqa: F401 - re-exported: measuring a profile is its own module
from cnnprof.predict.device import DeviceProfile, TypeFit
from cnnprof.counting.traffic import MemoryProfile, OpCall, analyze_memory
from cnnprof.counting.group import in_stage_order, stage_of, totals
from cnnprof.counting.types import type_sort_key
from cnnprof.results import Printable

_CHEAP_ACTS = frozenset("relu relu6 hardtanh threshold clamp clamp_min clamp_max hardswish hardsigmoid leaky_relu "
                        "prelu".split())
_BATCH_NORMS = frozenset(("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                          "batch_norm", "cudnn_batch_norm", "miopen_batch_norm", "_batch_norm_impl_index"))


def op_type_of(call: OpCall) -> str:
    """The op type of an op call: the calibration's category, its layer type split finer where costs differ."""
    t = call.type
    if t.startswith("conv "):
        return "conv"
    if t == "norm":
        return "batch norm" if call.op in _BATCH_NORMS else "layer norm"
    if t == "activation":
        return "activation" if call.op in _CHEAP_ACTS else "activation (exp)"
    if t == "pooling":
        return "pooling" if call.kernel else "global pooling"
    return t


def nnls_relative(features: Sequence[Sequence[float]], times: Sequence[float],
                  max_first: float | None = None) -> tuple[list[float], float]:
    """Non-negative x minimising the squared relative error of features @ x against times (exhaustive over
    active sets: a handful of columns). Returns (x, median relative error). `max_first` bounds x[0]."""
    import torch

    n = len(features[0])
    rows = torch.tensor([[f / t for f in fs] for fs, t in zip(features, times)], dtype=torch.float64)
    ones = torch.ones(len(times), 1, dtype=torch.float64)
    best = None
    for k in range(1, n + 1):
        for cols in combinations(range(n), k):
            sol = torch.linalg.lstsq(rows[:, cols], ones).solution.flatten()
            if (sol < 0).any() or (max_first is not None and 0 in cols and sol[0] > max_first):
                continue
            x = [0.0] * n
            for c, v in zip(cols, sol.tolist()):
                x[c] = v
            resid = (rows @ torch.tensor(x, dtype=torch.float64)) - 1
            sse = float((resid**2).sum())  # the least-squares objective picks among the feasible subsets
            if best is None or sse < best[0]:
                best = (sse, x, float(resid.abs().median()))
    return best[1], best[2]


def fit_type(samples: Sequence[tuple[float, float, float]]) -> TypeFit:
    """Non-negative least squares of t = a + f * x1 + b * x2 on relative error, over (FLOPs, bytes, t);
    the fixed cost a may not exceed the fastest layer's whole time."""
    (a, x1, x2), median = nnls_relative([(1.0, f, b) for f, b, _ in samples], [t for _, _, t in samples],
                                        max_first=min(t for _, _, t in samples))
    return TypeFit(overhead_s=a, flops_per_s=1 / x1 if x1 > 0 else float("inf"),
                   bytes_per_s=1 / x2 if x2 > 0 else float("inf"), samples=len(samples), median_error=median)


# ----------------------------------------------------------------------------- prediction

@dataclass(frozen=True)
class OpPrediction:
    """One op placed on the roofline, with both predicted times."""

    call: OpCall
    op_type: str
    compute_s: float
    memory_s: float
    overhead_s: float
    roofline_s: float
    calibrated_s: float | None
    attainable: float  # FLOP/s under the roofs at this intensity
    measured_s: float | None = None  # this layer timed alone on the device (cnnprof.predict.lut), if it was

    @property
    def source(self) -> str:
        """Where its predicted time comes from: measured (the layer table), calibrated, or roofline."""
        return "measured" if self.measured_s is not None else (
            "calibrated" if self.calibrated_s is not None else "roofline")

    @property
    def predicted_s(self) -> float:
        """The best time known: measured, else calibrated, else roofline."""
        return self.measured_s if self.measured_s is not None else (
            self.calibrated_s if self.calibrated_s is not None else self.roofline_s)

    @property
    def bound(self) -> str:
        """compute, memory, or overhead (when the fixed per-op cost exceeds both roofs' times)."""
        if self.overhead_s > max(self.compute_s, self.memory_s):
            return "overhead"
        return "compute" if self.compute_s >= self.memory_s else "memory"


_SUM_KEYS = ("macs", "flops", "bytes", "acts", "calls", "compute_s", "memory_s", "overhead_s", "roofline_s",
             "calibrated_s", "predicted_s")


def _sums(p: OpPrediction) -> tuple:
    """What a group of predicted ops adds up (in _SUM_KEYS order); an uncalibrated op counts its roofline time."""
    c = p.call
    return (c.macs, c.flops, c.bytes, c.acts, 1, p.compute_s, p.memory_s, p.overhead_s, p.roofline_s,
            p.calibrated_s if p.calibrated_s is not None else p.roofline_s, p.predicted_s)


@dataclass(frozen=True)
class LatencyPrediction(Printable):
    """Predicted latency of one forward pass on one device profile."""

    model: str
    input_shape: tuple[int, ...]
    dtype: str
    device: str
    device_name: str
    source: str  # measured | datasheet | file
    peak_flops: float
    bandwidth: float
    ops: tuple[OpPrediction, ...]
    module_calls: int
    module_overhead_s: float
    memory: MemoryProfile
    view_overhead_s: float = 0.0
    latency_model: str = ""  # what priced the calibrated times when not this device's micro-benchmarks
    threads: int = 0  # CPU threads of the device profile (0: not a CPU measurement)

    @property
    def ridge(self) -> float:
        return self.peak_flops / self.bandwidth

    @property
    def roofline_s(self) -> float:
        """Pure roofline: per op max(compute, memory) + dispatch overhead."""
        return sum(p.roofline_s for p in self.ops)

    @property
    def calibrated(self) -> bool:
        return any(p.calibrated_s is not None for p in self.ops)

    @property
    def calibrated_s(self) -> float | None:
        """Per-op-type calibrated times (roofline for uncalibrated op types) + module-call and view overheads."""
        if not self.calibrated:
            return None
        ops = sum(p.calibrated_s if p.calibrated_s is not None else p.roofline_s for p in self.ops)
        return ops + self.module_calls * self.module_overhead_s + self.memory.free_calls * self.view_overhead_s

    @property
    def uncalibrated_types(self) -> tuple[str, ...]:
        return tuple(sorted({p.op_type for p in self.ops if p.calibrated_s is None}))

    @property
    def measured(self) -> bool:
        """Whether any op's time comes from the table of measured layers."""
        return any(p.measured_s is not None for p in self.ops)

    @property
    def overheads_s(self) -> float:
        """The calibrated module-call and view overheads (what no single layer's time holds)."""
        return self.module_calls * self.module_overhead_s + self.memory.free_calls * self.view_overhead_s

    @property
    def predicted_s(self) -> float:
        """Measured layers + calibrated op types + roofline for the rest, plus the calibrated overheads."""
        ops = sum(p.predicted_s for p in self.ops)  # summed as calibrated_s is: the same bits without measured layers
        return ops + self.module_calls * self.module_overhead_s + self.memory.free_calls * self.view_overhead_s

    def time_sources(self) -> dict[str, float]:
        """Seconds of the predicted time by where they come from: measured, calibrated, roofline, overhead."""
        out = {"measured": 0.0, "calibrated": 0.0, "roofline": 0.0, "overhead": self.overheads_s}
        for p in self.ops:
            out[p.source] += p.predicted_s
        return out

    def best_s(self) -> float:
        return self.predicted_s

    def by(self, key: Callable[[OpPrediction], str]) -> list[dict[str, Any]]:
        """Totals per group: macs, flops, bytes, intensity, predicted times, bound of the group."""
        sums = totals(self.ops, lambda p: (key(p),), _sums)
        rows = []
        for name, values in sums.items():
            a = dict(zip(_SUM_KEYS, values))
            intensity = a["flops"] / a["bytes"] if a["bytes"] else 0.0
            bound = ("overhead" if a["overhead_s"] > max(a["compute_s"], a["memory_s"])
                     else "compute" if a["compute_s"] >= a["memory_s"] else "memory")
            rows.append({"name": name, **a, "intensity": intensity,
                         "attainable": min(self.peak_flops, intensity * self.bandwidth), "bound": bound,
                         "side": "above ridge" if intensity >= self.ridge else "below ridge"})
        return rows

    def by_type(self) -> list[dict[str, Any]]:
        return sorted(self.by(lambda p: p.call.type), key=lambda r: type_sort_key(r["name"]))

    def by_stage(self) -> list[dict[str, Any]]:
        return in_stage_order({r["name"]: r for r in self.by(lambda p: stage_of(p.call.module))},
                              self.memory.module_names)

    def by_layer(self) -> list[dict[str, Any]]:
        return self.by(lambda p: f"{p.call.module or '(root)'} [{p.call.op}]")


def predict_ops(memory: MemoryProfile, profile: DeviceProfile, dtype: str | None = None) -> LatencyPrediction:
    """Place every op of a traffic profile on `profile`'s roofline and predict its time."""
    dtype = dtype or memory.dtype
    peak, bw = profile.peak(dtype), profile.bandwidth
    use_fits = profile.calibration and profile.calibration_dtype == dtype
    table = profile.layers if profile.layers is not None and profile.layers.dtype == dtype else None
    preds = []
    for c in memory.calls:
        op_type = op_type_of(c)
        tc, tm = c.flops / peak, c.bytes / bw
        fit = profile.calibration.get(op_type) if use_fits else None
        preds.append(OpPrediction(
            call=c, op_type=op_type, compute_s=tc, memory_s=tm, overhead_s=profile.op_overhead_s,
            roofline_s=max(tc, tm) + profile.op_overhead_s,
            calibrated_s=fit.time(c.flops, c.bytes) if fit else None,
            attainable=min(peak, c.intensity * bw), measured_s=table.lookup(c) if table is not None else None))
    pred = LatencyPrediction(
        model=memory.model, input_shape=memory.input_shape, dtype=dtype, device=profile.device,
        device_name=profile.name, source=profile.source, peak_flops=peak, bandwidth=bw, ops=tuple(preds),
        module_calls=memory.modules_called, module_overhead_s=_module_overhead(profile, table) if use_fits else 0.0,
        memory=memory, view_overhead_s=profile.view_overhead_s if use_fits else 0.0, threads=profile.threads)
    if use_fits:
        return pred
    from cnnprof.predict.gpu import with_efficiency  # a datasheet GPU: priced by the fitted efficiency model

    return with_efficiency(pred, profile)


def _module_overhead(profile: DeviceProfile, table: Any) -> float:
    """A module call's cost: inside a network as the layer table measured it, else the profile's (an nn.Identity
    called alone)."""
    return table.module_overhead_s if table is not None and table.module_overhead_s is not None else (
        profile.module_overhead_s)


def predict_latency(model: Any, input_shape: Sequence[int] | None, device_profile: DeviceProfile,
                    dtype: str = "float32", overrides: dict | None = None, inputs: Any = None) -> LatencyPrediction:
    """Predicted forward latency of `model` (nn.Module, spec or MemoryProfile) on `device_profile`; inputs as
    in count_flops (one `input_shape`, or `inputs`, or the model's declared input)."""
    if isinstance(model, MemoryProfile):  # already counted: its bytes are at its own dtype
        return predict_ops(model, device_profile, model.dtype)
    from cnnprof.models.spec import resolve

    source = resolve(model, overrides)
    measure_layers(device_profile, source, (tuple(input_shape),) if input_shape is not None else inputs, dtype)
    return predict_ops(analyze_memory(source, input_shape, dtype, inputs=inputs), device_profile, dtype)


def measure_layers(device_profile: DeviceProfile, model: Any, inputs: Any = None, dtype: str = "float32") -> int:
    """Time alone every layer of `model` its profile's layer table misses, when the table is filled on demand
    (cnnprof.predict.lut); returns how many were measured (0 without such a table)."""
    table = device_profile.layers
    if table is None or not table.on_demand or table.dtype != dtype:
        return 0
    from cnnprof.predict.lut import measure_model

    return measure_model(table, model, inputs, on_step=table.on_step, warn=table.warn,
                         view_overhead_s=device_profile.view_overhead_s)


# ----------------------------------------------------------------------------- model-level correction

COMPUTE_TYPES = frozenset(("conv", "pointwise conv", "grouped conv", "linear"))


def split_calibrated(pred: LatencyPrediction) -> tuple[float, float]:
    """(calibrated time of dense / pointwise / grouped conv and linear ops, time of everything else including
    the module and view overheads): the two parts a model-level correction scales separately."""
    total = pred.calibrated_s if pred.calibrated_s is not None else pred.roofline_s
    compute = sum(p.calibrated_s if p.calibrated_s is not None else p.roofline_s
                  for p in pred.ops if p.op_type in COMPUTE_TYPES)
    return compute, total - compute


def fit_correction(samples: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """(a, b) with measured ~ a * compute + b * rest, over (compute, rest, measured) of OTHER models: ops run
    slower inside a network than alone (caches, allocator), memory-bound ones most. The caller must leave
    the model it predicts out of `samples`."""
    x, _ = nnls_relative([(c, r) for c, r, _ in samples], [m for _, _, m in samples])
    return x[0], x[1]
