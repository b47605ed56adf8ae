"""Measured forward-pass time on CPU or CUDA, taken the way torch.utils.benchmark and timm do.

Protocol: eval() + inference_mode; input created on the device; the first (cold) call is timed and
reported on its own (with --compile it includes compilation); warm-up runs for `warmup` seconds and
is excluded; then every call is timed until `min_time` seconds and `min_runs` calls are reached.
CPU calls are timed with perf_counter; CUDA calls with CUDA events (kernel time, not launch time)
and a synchronisation before the times are read. cudnn.benchmark is on for CUDA. Measure -> data:
the result keeps the raw per-call times and derives the statistics; nothing here prints.
"""
from __future__ import annotations

import gc
import platform
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnprof.counting.conventions import to_flops
from cnnprof.counting.formulas import lookup
from cnnprof.counting.types import type_sort_key
from cnnprof.errors import CnnprofError, DeviceError, first_line
from cnnprof.inputs import materialize, split

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
NOISY_IQR = 0.10  # flag results whose IQR exceeds 10% of the median (torch.utils.benchmark's rule)


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
class BenchResult:
    """Raw per-call latencies of one (model, batch size) and the statistics derived from them."""

    model: str
    device: str
    batch_size: int
    input_shape: tuple[int, ...]
    dtype: str
    env: Environment
    status: str = "ok"  # ok | oom | error
    error: str | None = None
    times_s: tuple[float, ...] = ()
    cold_s: float | None = None
    compile_s: float | None = None
    warmup_runs: int = 0
    macs: int | None = None  # conv-scope MACs of one forward pass at this batch size
    peak_allocated: int | None = None  # CUDA bytes, max after warm-up
    peak_reserved: int | None = None
    breakdown: tuple[TypeTiming, ...] = field(default=())
    requested_batch_size: int | None = None  # differs from batch_size when --auto-batch halved it
    rounds: int = 0  # interleaved rounds the samples come from (0: timed on its own)
    needed_bytes: int | None = None  # estimated memory of the configuration (parameters + activations)

    @property
    def runs(self) -> int:
        return len(self.times_s)

    def quantile(self, q: float) -> float | None:
        """Linearly interpolated quantile of the per-call times (numpy's default method)."""
        if not self.times_s:
            return None
        xs = sorted(self.times_s)
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    @property
    def median_s(self) -> float | None:
        return self.quantile(0.5)

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
        return None if not self.times_s else self.quantile(0.75) - self.quantile(0.25)

    @property
    def noisy(self) -> bool:
        return bool(self.times_s) and self.iqr_s > NOISY_IQR * self.median_s

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
        ms = lambda s: None if s is None else 1e3 * s  # noqa: E731
        return {"median": ms(self.median_s), "mean": ms(self.mean_s), "min": ms(self.min_s),
                "p90": ms(self.quantile(0.9)), "p99": ms(self.quantile(0.99)), "iqr": ms(self.iqr_s)}


def check_device(device: str) -> None:
    """Raise DeviceError (exit 2) when the device cannot be used."""
    if device == "cpu":
        return
    if device != "cuda":
        raise DeviceError(f"unknown device {device!r}; choose cpu or cuda")
    if not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA"
        raise DeviceError(f"--device cuda requested but CUDA is not available (torch {torch.__version__}, built with "
                          f"{built}); use --device cpu")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str, dtype: str, channels_last: bool, compiled: bool) -> Environment:
    cuda = device == "cuda"
    return Environment(
        torch_version=torch.__version__, device=device,
        device_name=torch.cuda.get_device_name() if cuda else cpu_name(),
        threads=torch.get_num_threads(), dtype=dtype, channels_last=channels_last, compiled=compiled,
        cudnn_benchmark=cuda,
    )


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _is_oom(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError and the CPU allocator's failure all count as OOM."""
    text = str(exc).lower()
    return (isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in text
            or "can't allocate memory" in text or "defaultcpuallocator" in text)


MAX_SECONDS = 3600.0  # cap on --warmup and --min-time: a typo must not run for days


def validate_timing(warmup: float, min_time: float, min_runs: int, threads: int | None, dtype: str) -> None:
    """Raise CnnprofError for timing settings that cannot work (non-finite, negative, too many threads)."""
    import math
    import os

    if dtype not in DTYPES:
        raise CnnprofError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    for name, value in (("--warmup", warmup), ("--min-time", min_time)):
        if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
            raise CnnprofError(f"{name} {value}: expected a finite number of seconds from 0 to {MAX_SECONDS:g}")
    if min_runs < 1 or min_runs > 1_000_000:
        raise CnnprofError(f"--min-runs {min_runs}: expected 1 to 1000000")
    cores = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cores:
        raise CnnprofError(f"--threads {threads}: expected 1 to {cores} (the CPU cores of this machine)")


def _timed_runs(model: nn.Module, x: torch.Tensor, device: str, min_time: float, min_runs: int) -> list[float]:
    """Per-call latencies in seconds: CUDA events on the GPU, perf_counter on the CPU. The garbage
    collector is paused while timing, as timeit (and so torch.utils.benchmark) does."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _timed_loop(model, x, device, min_time, min_runs)
    finally:
        if gc_was_enabled:
            gc.enable()


def _timed_loop(model: nn.Module, x: torch.Tensor, device: str, min_time: float, min_runs: int) -> list[float]:
    if device == "cuda":
        pairs = []
        start_wall = time.perf_counter()
        while len(pairs) < min_runs or time.perf_counter() - start_wall < min_time:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize()
        return [s.elapsed_time(e) / 1e3 for s, e in pairs]
    times: list[float] = []
    while len(times) < min_runs or sum(times) < min_time:
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return times


class OpTimer(TorchDispatchMode):
    """Times every aten op of real forward passes and prices it with the FLOP formulas."""

    def __init__(self, device: str):
        super().__init__()
        self.device = device
        self.acc: dict[str, list[float]] = {}  # type -> [macs, ops, seconds, calls]
        self.pending: list[tuple[str, int, int, Any, Any]] = []

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never used under torch.compile; avoids importing torch._dynamo

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = func(*args, **kwargs)
            end.record()
        else:
            t0 = time.perf_counter()
            out = func(*args, **kwargs)
            start, end = t0, time.perf_counter()
        formula, _ = lookup(func)
        cost = formula(args, kwargs, out) if formula else None
        kind = cost.type if cost else "other"
        self.pending.append((kind, cost.macs if cost else 0, cost.ops if cost else 0, start, end))
        return out

    def flush(self) -> None:
        """Read the pending timings (after a CUDA synchronisation) into the per-type totals."""
        _sync(self.device)
        for kind, macs, ops, start, end in self.pending:
            seconds = start.elapsed_time(end) / 1e3 if self.device == "cuda" else end - start
            a = self.acc.setdefault(kind, [0, 0, 0.0, 0])
            a[0] += macs
            a[1] += ops
            a[2] += seconds
            a[3] += 1
        self.pending.clear()


def _breakdown(model: nn.Module, x: torch.Tensor, device: str, min_time: float) -> tuple[TypeTiming, ...]:
    """Per layer type: MACs and measured time of one forward pass, averaged over a few passes."""
    timer = OpTimer(device)
    runs, start = 0, time.perf_counter()
    while runs < 3 or (time.perf_counter() - start < min_time and runs < 50):
        with timer:
            model(x)
        timer.flush()
        runs += 1
    rows = [TypeTiming(k, int(v[0] // runs), int(v[1] // runs), v[2] / runs, int(v[3] // runs))
            for k, v in timer.acc.items()]
    return tuple(sorted(rows, key=lambda r: type_sort_key(r.type)))


def benchmark(model: Any, input_shape: Sequence[int] | None = None, device: str = "cpu", *,
              batch_sizes: Sequence[int] | None = None, dtype: str = "float32", channels_last: bool = False,
              threads: int | None = None, warmup: float = 0.5, min_time: float = 1.0, min_runs: int = 5,
              compile: bool = False, breakdown: bool = False, overrides: dict | None = None,
              label: str | None = None, inputs: Any = None):
    """Measure forward latency of `model` (nn.Module or spec). Returns a BenchResult, or a list of them
    (one per batch size) when `batch_sizes` is given. `inputs`: shapes/specs as in count_flops (default: the
    model's declared input); real tensors are made of them: float inputs uniform in [0, 1) in `dtype`,
    int and bool inputs zero (a valid token id or class, an empty mask)."""
    from cnnprof.counting.flops import count_flops, parse_shape
    from cnnprof.inputs import as_specs, with_batch_and_resolution
    from cnnprof.models.spec import model_inputs, resolve

    check_device(device)
    validate_timing(warmup, min_time, min_runs, threads, dtype)
    if threads is not None:
        torch.set_num_threads(threads)
    source = resolve(model, overrides)
    meta_model = source.build("meta") if source.module is None else None
    counted = replace(source, module=meta_model) if meta_model is not None else source
    if input_shape is not None:
        inputs = (parse_shape(input_shape, ()),)
    base = as_specs(*model_inputs(source, counted.module, inputs))
    if not base:
        raise CnnprofError(f"{source.label}: no tensor inputs to benchmark with; give --input-shape")
    specs_of = {s[0].shape: s for s in ([with_batch_and_resolution(base, b, None) for b in batch_sizes]
                                        if batch_sizes else [base])}
    shapes = list(specs_of)
    name = label or source.label
    env = environment(device, dtype, channels_last, compile)
    macs = {s: count_flops(counted, inputs=list(specs_of[s])).macs for s in shapes}
    results = []
    previous_cudnn = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device == "cuda"
    try:
        try:
            net = _prepare(source, device, dtype, channels_last, compile)
        except Exception as exc:  # noqa: BLE001 - e.g. the weights alone do not fit on the GPU
            status, error = _failure(exc)
            return _one_or_all([BenchResult(model=name, device=device, batch_size=s[0], input_shape=s, dtype=dtype,
                                            env=env, macs=macs[s], status=status, error=error) for s in shapes],
                               batch_sizes)
        for shape in shapes:
            refused = memory_refusal(meta_model, specs_of[shape], device, dtype)
            if refused is not None:
                results.append(BenchResult(model=name, device=device, batch_size=shape[0], input_shape=shape,
                                           dtype=dtype, env=env, macs=macs[shape], status="oom", error=refused[1],
                                           needed_bytes=refused[0]))
                continue
            results.append(_measure(net, specs_of[shape], device, dtype, channels_last, warmup, min_time, min_runs,
                                    compile, breakdown, name, env, macs[shape]))
    finally:
        torch.backends.cudnn.benchmark = previous_cudnn
    return _one_or_all(results, batch_sizes)


def memory_refusal(meta_model: nn.Module | None, inputs: Any, device: str,
                   dtype: str) -> tuple[int, str] | None:
    """(needed bytes, reason) when the configuration cannot fit in free memory, else None (also when the
    estimate itself cannot be made: then the real run decides)."""
    from cnnprof.counting.footprint import estimate_bytes, fits, gib

    if meta_model is None:
        return None
    try:
        needed = estimate_bytes(meta_model, inputs, dtype)
    except Exception:  # noqa: BLE001 - no estimate: let the measurement itself find out
        return None
    ok, free = fits(needed, device)
    if ok:
        return None
    where = "free device memory" if device == "cuda" else "available RAM"
    return needed, f"out of memory: needs about {gib(needed)}, {gib(free)} {where}; not attempted"


def _one_or_all(results: list[BenchResult], batch_sizes: Sequence[int] | None):
    return results if batch_sizes else results[0]


def _failure(exc: BaseException) -> tuple[str, str]:
    """(status, one-line error) of a failed measurement."""
    if _is_oom(exc):
        return "oom", "out of memory" + ("" if isinstance(exc, torch.cuda.OutOfMemoryError) or "cuda" in str(exc).lower()
                                         else " (CPU allocation failed)")
    return "error", f"{type(exc).__name__}: {first_line(exc)}"


def _prepare(source: Any, device: str, dtype: str, channels_last: bool, compile: bool) -> nn.Module:
    net = source.build(device).to(dtype=DTYPES[dtype])
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    net.eval()
    return torch.compile(net) if compile else net


def _real_inputs(specs: Sequence[Any], device: str, dtype: str, channels_last: bool) -> tuple[tuple, dict]:
    """Tensors for `specs` on `device`: float inputs in the benchmark dtype, others as specified."""
    args, kwargs = materialize(*split(specs), real=True)

    def place(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device=device, dtype=DTYPES[dtype] if t.is_floating_point() else t.dtype)
        return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t

    return tuple(place(a) for a in args), {k: place(v) for k, v in kwargs.items()}


def _measure(net: nn.Module, specs: Sequence[Any], device: str, dtype: str, channels_last: bool, warmup: float,
             min_time: float, min_runs: int, compile: bool, breakdown: bool, name: str, env: Environment,
             macs: int) -> BenchResult:
    shape = specs[0].shape
    base = BenchResult(model=name, device=device, batch_size=shape[0], input_shape=shape, dtype=dtype, env=env,
                       macs=macs)
    x = None
    try:
        args, kwargs = _real_inputs(specs, device, dtype, channels_last)
        # The timing loops call model(x): bind every input so that x is only a placeholder.
        model, x = net, None
        net = lambda _x: model(*args, **kwargs)  # noqa: E731
        with torch.inference_mode():
            t0 = time.perf_counter()
            net(x)
            _sync(device)
            cold = time.perf_counter() - t0
            warm_runs, start = 0, time.perf_counter()
            while warm_runs < 1 or time.perf_counter() - start < warmup:
                net(x)
                warm_runs += 1
            _sync(device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = _timed_runs(net, x, device, min_time, min_runs)
            peak = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()) if device == "cuda" else (None, None)
            parts = _breakdown(net, x, device, min_time) if breakdown and not compile else ()
        return replace(base, times_s=tuple(times), cold_s=cold, compile_s=cold if compile else None,
                       warmup_runs=warm_runs, peak_allocated=peak[0], peak_reserved=peak[1], breakdown=parts)
    except Exception as exc:  # noqa: BLE001 - a failed measurement is a result row, not a crash
        status, error = _failure(exc)
        return replace(base, status=status, error=error)
    finally:
        del x, net
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
