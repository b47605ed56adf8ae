"""Latency prediction from per-op costs, at two levels:

(a) roofline: every op takes max(FLOPs / peak, bytes / bandwidth) plus the device's per-op dispatch
    overhead (Williams et al., "Roofline", 2009);
(b) calibrated: every op kind (dense / pointwise / depthwise / grouped conv, linear, batch / layer
    norm, cheap / transcendental activation, element-wise, windowed / global pooling, memory copy) has
    its own t = overhead + FLOPs / rate + bytes / bandwidth, fitted (non-negative least squares on
    relative error) to micro-benchmarks of single layers run on this device, an op-level lookup in
    the spirit of FBNet and nn-Meter; plus the measured cost of every module call. The micro-benchmark
    shapes are a fixed synthetic grid, not layers taken from the zoo, so no model the predictor is
    judged on is used to fit it. FLOPs are hardware FLOPs (1 MAC = 2 FLOPs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import combinations, cycle
from math import ceil
from typing import Any, Callable, Sequence

from cnnprof.analysis.device import (DeviceProfile, KindFit, device_name, measure_bandwidth, measure_gemm,
                                     measure_overheads, time_call)
from cnnprof.analysis.memory import COPY_TYPE, MemoryProfile, OpCall, TrafficCounter, analyze_memory
from cnnprof.analysis.types import type_sort_key
from cnnprof.errors import CnnprofError

COLD_BYTES = {"cpu": 64 << 20, "cuda": 128 << 20}  # twice the L3 of the machine used here; above an H100's L2
MAX_COPIES = 64
_CHEAP_ACTS = frozenset("relu relu6 hardtanh threshold clamp clamp_min clamp_max hardswish hardsigmoid leaky_relu "
                        "prelu".split())
_BATCH_NORMS = frozenset(("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                          "batch_norm", "cudnn_batch_norm", "miopen_batch_norm", "_batch_norm_impl_index"))


def kind_of(call: OpCall) -> str:
    """The calibration kind of an op call (finer than its layer type where costs differ)."""
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


# ----------------------------------------------------------------------------- micro-benchmarks

def _grid() -> list[tuple[str, str, Callable]]:
    """(kind, label, make(device, dtype) -> zero-argument callable) of every single-layer micro-benchmark.
    Synthetic shapes spanning the channel, resolution and kernel ranges of ImageNet CNNs."""
    import torch
    import torch.nn.functional as F

    def t(dev, dt, *shape):
        return torch.randn(*shape, device=dev, dtype=dt)

    def conv(cin, cout, h, k=3, s=1, g=1):
        def make(dev, dt):
            x, w = t(dev, dt, 1, cin, h, h), t(dev, dt, cout, cin // g, k, k)
            return lambda: F.conv2d(x, w, None, s, k // 2, 1, g)
        return make

    def linear(rows, fin, fout):
        def make(dev, dt):
            x, w, b = t(dev, dt, rows, fin), t(dev, dt, fout, fin), t(dev, dt, fout)
            return lambda: F.linear(x, w, b)
        return make

    def bn(c, h):
        def make(dev, dt):
            x, p = t(dev, dt, 1, c, h, h), [t(dev, dt, c).abs() for _ in range(4)]
            return lambda: F.batch_norm(x, p[0], p[1], p[2], p[3], False)
        return make

    def ln(h, c):
        def make(dev, dt):
            x, w, b = t(dev, dt, 1, h, h, c), t(dev, dt, c), t(dev, dt, c)
            return lambda: F.layer_norm(x, (c,), w, b)
        return make

    def unary(fn, c, h):
        def make(dev, dt):
            x = t(dev, dt, 1, c, h, h)
            return lambda: fn(x)
        return make

    def binary(c, h, broadcast=False):
        def make(dev, dt):
            x, y = t(dev, dt, 1, c, h, h), t(dev, dt, 1, c, 1, 1) if broadcast else t(dev, dt, 1, c, h, h)
            return lambda: torch.mul(x, y) if broadcast else torch.add(x, y)
        return make

    def pool(c, h, k, s, avg=False):
        def make(dev, dt):
            x = t(dev, dt, 1, c, h, h)
            return lambda: (F.avg_pool2d if avg else F.max_pool2d)(x, k, s, k // 2)
        return make

    def gpool(c, h):
        def make(dev, dt):
            x = t(dev, dt, 1, c, h, h)
            return lambda: F.adaptive_avg_pool2d(x, 1)
        return make

    def cat(c, h):
        def make(dev, dt):
            a, b = t(dev, dt, 1, c, h, h), t(dev, dt, 1, c, h, h)
            return lambda: torch.cat([a, b], 1)
        return make

    def shuffle(c, h):
        def make(dev, dt):
            x = t(dev, dt, 1, 2, c // 2, h, h)
            return lambda: x.transpose(1, 2).contiguous()
        return make

    # Shapes are deliberately off the zoo's (channels and resolutions no ImageNet model here uses; a test
    # checks that no micro-benchmark equals a zoo layer), so no model is ever part of its own calibration.
    g: list[tuple[str, str, Callable]] = []
    for cin, cout, h, k, s in [(3, 24, 208, 3, 2), (3, 48, 200, 7, 2), (24, 24, 104, 3, 1), (40, 40, 52, 3, 1),
                               (72, 72, 52, 3, 1), (72, 136, 52, 3, 2), (136, 136, 26, 3, 1), (104, 200, 26, 3, 1),
                               (264, 264, 13, 3, 1), (456, 456, 6, 3, 1), (200, 392, 26, 3, 2)]:
        g.append(("conv", f"conv {k}x{k} {cin}->{cout} @{h} s{s}", conv(cin, cout, h, k, s)))
    for cin, cout, h in [(24, 88, 104), (32, 136, 52), (136, 32, 52), (72, 264, 52), (264, 72, 52), (136, 456, 26),
                         (456, 136, 26), (264, 920, 13), (920, 264, 13), (328, 1200, 6), (904, 176, 6),
                         (456, 1800, 6), (1800, 456, 6), (72, 20, 1), (904, 224, 1), (224, 904, 1), (40, 12, 1)]:
        g.append(("pointwise conv", f"conv 1x1 {cin}->{cout} @{h}", conv(cin, cout, h, 1)))
    for c, h, k, s in [(40, 104, 3, 1), (88, 104, 3, 2), (136, 52, 3, 1), (136, 52, 3, 2), (200, 26, 3, 1),
                       (392, 13, 3, 1), (600, 13, 3, 1), (904, 6, 3, 1), (232, 26, 5, 1), (680, 13, 5, 1),
                       (1096, 6, 5, 1), (80, 52, 5, 2)]:
        g.append(("depthwise conv", f"dw {k}x{k} {c} @{h} s{s}", conv(c, c, h, k, s, c)))
    for c, h, grp in [(144, 52, 36), (264, 26, 33), (520, 13, 65), (1040, 6, 65), (72, 52, 9), (168, 13, 7),
                      (400, 6, 25), (56, 26, 2)]:
        g.append(("grouped conv", f"grouped 3x3 {c} g{grp} @{h}", conv(c, c, h, 3, 1, grp)))
    for rows, fin, fout in [(1, 640, 800), (1, 1536, 900), (1, 1792, 1000), (1, 3584, 3072), (1, 8192, 3072),
                            (2704, 88, 352), (676, 352, 176), (36, 2816, 704)]:
        g.append(("linear", f"linear {rows}x{fin}->{fout}", linear(rows, fin, fout)))
    for c, h in [(40, 104), (72, 52), (264, 52), (456, 26), (920, 13), (1800, 6), (76, 1)]:
        g.append(("batch norm", f"batch norm {c} @{h}", bn(c, h)))
    for h, c in [(52, 88), (26, 176), (13, 352), (6, 704), (1, 704)]:
        g.append(("layer norm", f"layer norm {c} @{h}", ln(h, c)))
    for c, h in [(40, 104), (72, 52), (264, 52), (456, 26), (920, 13), (904, 6), (76, 1)]:
        g.append(("activation", f"relu {c} @{h}", unary(torch.relu, c, h)))
    for c, h in [(88, 104), (136, 52), (440, 13)]:
        g.append(("activation", f"hardswish {c} @{h}", unary(F.hardswish, c, h)))
    for c, h in [(40, 104), (136, 52), (600, 13), (1096, 6), (904, 1)]:
        g.append(("activation (exp)", f"silu {c} @{h}", unary(F.silu, c, h)))
    for c, h in [(88, 52), (392, 13), (600, 1)]:
        g.append(("activation (exp)", f"sigmoid {c} @{h}", unary(torch.sigmoid, c, h)))
    g.append(("activation (exp)", "gelu 352 @52", unary(F.gelu, 352, 52)))
    for c, h in [(72, 52), (264, 52), (456, 26), (920, 13), (1800, 6), (32, 52)]:
        g.append(("element-wise", f"add {c} @{h}", binary(c, h)))
    for c, h in [(88, 104), (440, 13), (1096, 6)]:
        g.append(("element-wise", f"mul broadcast {c} @{h}", binary(c, h, True)))
    for c, h, k, s, avg in [(48, 120, 3, 2, False), (32, 100, 3, 2, False), (264, 52, 2, 2, True),
                            (456, 26, 2, 2, False), (136, 52, 3, 1, True)]:
        g.append(("pooling", f"{'avg' if avg else 'max'} pool {k}x{k} {c} @{h}", pool(c, h, k, s, avg)))
    for c, h in [(1800, 6), (1200, 6), (88, 104), (904, 13), (72, 52)]:
        g.append(("global pooling", f"global pool {c} @{h}", gpool(c, h)))
    for c, h in [(56, 26), (120, 13), (240, 6)]:
        g.append((COPY_TYPE, f"cat 2x{c} @{h}", cat(c, h)))
    for c, h in [(120, 26), (240, 13), (480, 6)]:
        g.append((COPY_TYPE, f"channel shuffle {c} @{h}", shuffle(c, h)))
    return g


def _cold_bytes(device: str) -> int:
    """Bytes the micro-benchmark copies should span: twice the CPU's last-level cache when Linux says."""
    if device == "cpu":
        try:
            from pathlib import Path

            sizes = [Path(p).read_text().strip() for p in
                     Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size")]
            units = {"K": 1 << 10, "M": 1 << 20}
            largest = max(int(v[:-1]) * units[v[-1]] for v in sizes if v and v[-1] in units)
            return 2 * largest
        except (OSError, ValueError):
            pass
    return COLD_BYTES[device]


def _features(make: Callable, dtype: str) -> tuple[float, float]:
    """(hardware FLOPs, bytes) of one micro-benchmark call, counted on meta like a model's ops."""
    import torch

    from cnnprof.analysis.memory import ELEMENT_BYTES
    from cnnprof.analysis.runtime import DTYPES

    counter = TrafficCounter(None, ELEMENT_BYTES[dtype])
    fn = make("meta", DTYPES[dtype])
    with torch.no_grad(), counter:
        fn()
    return float(sum(c.flops for c in counter.calls)), float(sum(c.bytes for c in counter.calls))


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


def fit_kind(samples: Sequence[tuple[float, float, float]]) -> KindFit:
    """Non-negative least squares of t = a + f * x1 + b * x2 on relative error, over (FLOPs, bytes, t);
    the fixed cost a may not exceed the fastest layer's whole time."""
    (a, x1, x2), median = nnls_relative([(1.0, f, b) for f, b, _ in samples], [t for _, _, t in samples],
                                        max_first=min(t for _, _, t in samples))
    return KindFit(overhead_s=a, flops_per_s=1 / x1 if x1 > 0 else float("inf"),
                   bytes_per_s=1 / x2 if x2 > 0 else float("inf"), samples=len(samples), median_error=median)


def calibrate(device: str = "cpu", dtype: str = "float32", *, quick: bool = False,
              on_step: Callable[[str, int, int], None] | None = None, micro: bool = True,
              budget_s: float = 50.0) -> DeviceProfile:
    """Measure peaks, overheads and (with `micro`) the per-op-kind calibration of `device`, within about
    `budget_s` seconds. Ctrl-C stops early and returns what was measured (complete=False)."""
    import torch

    from cnnprof.analysis.runtime import DTYPES, check_device

    check_device(device)
    if dtype not in DTYPES:
        raise CnnprofError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    cuda = device == "cuda"
    scale = 0.25 if quick else 1.0
    grid = _grid() if micro else []
    dtypes = ["float32", "bfloat16", "float16"]
    total = len(dtypes) + 2 + len(grid)
    peaks: dict[str, float] = {}
    state: dict[str, Any] = {"bandwidth": None, "copy": None, "triad": None, "op": None, "module": 0.0, "view": 0.0}
    samples: dict[str, list[tuple[float, float, float]]] = {}
    step = 0
    start = time.perf_counter()

    def tick(label: str) -> None:
        if on_step:
            on_step(label, step, total)

    complete = True
    try:
        for dt in dtypes:
            tick(f"peak GEMM {dt}")
            n = (8192 if dt != "float32" else 4096) if cuda else (1024 if dt == "float32" else 384)
            if quick and not cuda:
                n //= 2
            try:
                peaks[dt] = measure_gemm(device, dt, n, 0.5 * scale if dt == "float32" else 0.2 * scale)
            except RuntimeError:
                pass  # dtype without a GEMM kernel here: not measured
            step += 1
        tick("memory bandwidth (copy, triad)")
        nbytes = (1 << 30) if cuda else (64 << 20 if not quick else 16 << 20)
        state["copy"], state["triad"] = measure_bandwidth(device, nbytes, 0.3 * scale)
        state["bandwidth"] = max(state["copy"], state["triad"])
        step += 1
        tick("per-op and per-module overhead")
        state["op"], state["module"], state["view"] = measure_overheads(device, 0.2 * scale)
        step += 1
        with torch.inference_mode():
            for kind, label, make in grid:
                tick(f"micro-benchmark {label}")
                f, b = _features(make, dtype)
                # Cycle through enough copies of the layer's tensors to overflow the cache: in a forward
                # pass an op's weights were last touched a whole network ago, not by the previous call.
                copies = max(1, min(MAX_COPIES, ceil(_cold_bytes(device) / max(b, 1.0))))
                fns = cycle([make(device, DTYPES[dtype]) for _ in range(copies)])
                # Past 60% of the time budget (a busy machine), time just a few calls per layer.
                late = time.perf_counter() - start > 0.6 * budget_s
                t = time_call(lambda: next(fns)(), device, min_time=0.0 if late else 0.12 * scale,
                              min_runs=3 if late else 5, warmup=1 if late else 2)
                samples.setdefault(kind, []).append((f, b, t))
                step += 1
    except KeyboardInterrupt:
        complete = False
    if "float32" not in peaks or state["bandwidth"] is None:
        raise CnnprofError("interrupted before the peaks were measured; nothing kept")
    calibration = {k: fit_kind(v) for k, v in samples.items() if len(v) >= 3}
    return DeviceProfile(
        device=device, name=device_name(device), torch_version=torch.__version__,
        threads=torch.get_num_threads(), source="measured", peak_flops=peaks, bandwidth=state["bandwidth"],
        op_overhead_s=state["op"] if state["op"] is not None else 0.0, module_overhead_s=state["module"] or 0.0,
        view_overhead_s=state["view"] or 0.0,
        copy_bandwidth=state["copy"], triad_bandwidth=state["triad"], calibration=calibration,
        calibration_dtype=dtype, complete=complete, seconds=time.perf_counter() - start)


# ----------------------------------------------------------------------------- prediction

@dataclass(frozen=True)
class OpPrediction:
    """One op placed on the roofline, with both predicted times."""

    call: OpCall
    kind: str
    compute_s: float
    memory_s: float
    overhead_s: float
    roofline_s: float
    calibrated_s: float | None
    attainable: float  # FLOP/s under the roofs at this intensity

    @property
    def bound(self) -> str:
        """compute, memory, or overhead (when the fixed per-op cost exceeds both roofs' times)."""
        if self.overhead_s > max(self.compute_s, self.memory_s):
            return "overhead"
        return "compute" if self.compute_s >= self.memory_s else "memory"


@dataclass(frozen=True)
class LatencyPrediction:
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
        """Per-op-kind calibrated times (roofline for uncalibrated kinds) + module-call and view overheads."""
        if not self.calibrated:
            return None
        ops = sum(p.calibrated_s if p.calibrated_s is not None else p.roofline_s for p in self.ops)
        return ops + self.module_calls * self.module_overhead_s + self.memory.free_calls * self.view_overhead_s

    @property
    def uncalibrated_kinds(self) -> tuple[str, ...]:
        return tuple(sorted({p.kind for p in self.ops if p.calibrated_s is None}))

    def best_s(self) -> float:
        return self.calibrated_s if self.calibrated_s is not None else self.roofline_s

    def by(self, key: Callable[[OpPrediction], str]) -> list[dict[str, Any]]:
        """Totals per group: macs, flops, bytes, intensity, predicted times, bound of the group."""
        acc: dict[str, dict[str, Any]] = {}
        for p in self.ops:
            a = acc.setdefault(key(p), {"macs": 0, "flops": 0, "bytes": 0, "acts": 0, "calls": 0, "compute_s": 0.0,
                                        "memory_s": 0.0, "overhead_s": 0.0, "roofline_s": 0.0, "calibrated_s": 0.0})
            c = p.call
            for k, v in (("macs", c.macs), ("flops", c.flops), ("bytes", c.bytes), ("acts", c.acts), ("calls", 1),
                         ("compute_s", p.compute_s), ("memory_s", p.memory_s), ("overhead_s", p.overhead_s),
                         ("roofline_s", p.roofline_s),
                         ("calibrated_s", p.calibrated_s if p.calibrated_s is not None else p.roofline_s)):
                a[k] += v
        rows = []
        for name, a in acc.items():
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
        rows = {r["name"]: r for r in self.by(lambda p: p.call.module.split(".")[0] or "(root)")}
        order = [n for n in self.memory.module_names if n and "." not in n] + ["(root)"]
        return [rows[n] for n in order if n in rows]

    def by_layer(self) -> list[dict[str, Any]]:
        return self.by(lambda p: f"{p.call.module or '(root)'} [{p.call.op}]")


def predict_ops(memory: MemoryProfile, profile: DeviceProfile, dtype: str | None = None) -> LatencyPrediction:
    """Place every op of a traffic profile on `profile`'s roofline and predict its time."""
    dtype = dtype or memory.dtype
    peak, bw = profile.peak(dtype), profile.bandwidth
    use_fits = profile.calibration and profile.calibration_dtype == dtype
    preds = []
    for c in memory.calls:
        kind = kind_of(c)
        tc, tm = c.flops / peak, c.bytes / bw
        fit = profile.calibration.get(kind) if use_fits else None
        preds.append(OpPrediction(
            call=c, kind=kind, compute_s=tc, memory_s=tm, overhead_s=profile.op_overhead_s,
            roofline_s=max(tc, tm) + profile.op_overhead_s,
            calibrated_s=fit.time(c.flops, c.bytes) if fit else None,
            attainable=min(peak, c.intensity * bw)))
    return LatencyPrediction(
        model=memory.model, input_shape=memory.input_shape, dtype=dtype, device=profile.device,
        device_name=profile.name, source=profile.source, peak_flops=peak, bandwidth=bw, ops=tuple(preds),
        module_calls=memory.modules_called, module_overhead_s=profile.module_overhead_s if use_fits else 0.0,
        memory=memory, view_overhead_s=profile.view_overhead_s if use_fits else 0.0)


def predict_latency(model: Any, input_shape: Sequence[int] | None, device_profile: DeviceProfile,
                    dtype: str = "float32", overrides: dict | None = None) -> LatencyPrediction:
    """Predicted forward latency of `model` (nn.Module, spec or MemoryProfile) on `device_profile`."""
    if isinstance(model, MemoryProfile):  # already counted: its bytes are at its own dtype
        return predict_ops(model, device_profile, model.dtype)
    return predict_ops(analyze_memory(model, input_shape, dtype, overrides), device_profile, dtype)


# ----------------------------------------------------------------------------- model-level correction

COMPUTE_KINDS = frozenset(("conv", "pointwise conv", "grouped conv", "linear"))


def split_calibrated(pred: LatencyPrediction) -> tuple[float, float]:
    """(calibrated time of dense / pointwise / grouped conv and linear ops, time of everything else including
    the module and view overheads): the two parts a model-level correction scales separately."""
    total = pred.calibrated_s if pred.calibrated_s is not None else pred.roofline_s
    compute = sum(p.calibrated_s if p.calibrated_s is not None else p.roofline_s
                  for p in pred.ops if p.kind in COMPUTE_KINDS)
    return compute, total - compute


def fit_correction(samples: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """(a, b) with measured ~ a * compute + b * rest, over (compute, rest, measured) of OTHER models: ops run
    slower inside a network than alone (caches, allocator), memory-bound ones most. The caller must leave
    the model it predicts out of `samples`."""
    x, _ = nnls_relative([(c, r) for c, r, _ in samples], [m for _, _, m in samples])
    return x[0], x[1]
