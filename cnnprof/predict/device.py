"""What a device attains: peak FLOP/s per dtype (a large GEMM), memory bandwidth (large copy and
triad), per-op dispatch / launch overhead (a tiny op) and per-module call overhead; plus datasheet
peaks of known GPUs. Measured profiles are cached (platformdirs user cache dir, or $CNNPROF_CACHE_DIR)
keyed by device name, torch version and thread count. FLOP/s here are in the nvidia convention
(1 MAC = 2 FLOPs).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnnprof.errors import CnnprofError, parameter
from cnnprof.predict.profile_file import ProfileError, checked, read_json
from cnnprof.predict.trust import doubts
from cnnprof.timing import stats, timer
from cnnprof.results import Printable

# A datasheet GPU's per-op launch overhead: a typical figure (~5 us), not a datasheet number. The GPUs themselves,
# with their sources, are data in gpus.yaml (cnnprof.predict.gpu.datasheets).
GPU_LAUNCH_S = 5e-6


@dataclass(frozen=True)
class TypeFit:
    """Calibrated time of one op type: t = overhead_s + FLOPs / flops_per_s + bytes / bytes_per_s."""

    overhead_s: float
    flops_per_s: float  # inf when FLOPs do not explain the time
    bytes_per_s: float
    samples: int
    median_error: float  # relative error of the fit on its own micro-benchmarks

    def time(self, flops: float, nbytes: float) -> float:
        """Predicted seconds of one op of `flops` nvidia FLOPs moving `nbytes` bytes."""
        return self.overhead_s + flops / self.flops_per_s + nbytes / self.bytes_per_s


@dataclass(frozen=True)
class DeviceProfile(Printable):
    """Peaks of one device (measured or datasheet) and, when measured, the per-op-type calibration."""

    device: str  # cpu | cuda
    name: str
    torch_version: str
    threads: int
    source: str  # measured | datasheet | file
    peak_flops: dict[str, float]  # dtype -> nvidia FLOP/s
    bandwidth: float  # bytes/s
    op_overhead_s: float
    module_overhead_s: float = 0.0
    view_overhead_s: float = 0.0  # dispatch of an op that moves no data (view, reshape, ...)
    copy_bandwidth: float | None = None
    triad_bandwidth: float | None = None
    calibration: dict[str, TypeFit] = field(default_factory=dict)
    calibration_dtype: str = "float32"
    complete: bool = True  # False when the calibration was interrupted
    seconds: float = 0.0  # time the measurement took
    # The table of layers measured on this device (cnnprof.predict.lut.LayerTable), attached for a run; it is
    # cached in a file of its own, never in the profile's JSON.
    layers: Any = field(default=None, compare=False, repr=False)
    # Why this measurement is not to be cached (cnnprof.predict.trust.busy_reason: the machine was busy), or "".
    busy: str = field(default="", compare=False, repr=False)

    def peak(self, dtype: str = "float32") -> float:
        """Peak FLOP/s at `dtype` (float32's when the dtype was not measured)."""
        return self.peak_flops.get(dtype) or self.peak_flops["float32"]

    def ridge(self, dtype: str = "float32") -> float:
        """Ridge point: the intensity (FLOPs/byte) where compute and memory time are equal."""
        return self.peak(dtype) / self.bandwidth

    def to_json(self) -> dict[str, Any]:
        """The profile as JSON data (infinite rates as 1e308)."""
        d = dataclasses.asdict(dataclasses.replace(self, layers=None))
        d.pop("layers")
        d.pop("busy")
        d["calibration"] = {k: dataclasses.asdict(v) for k, v in self.calibration.items()}
        return json.loads(json.dumps(d, default=str).replace("Infinity", "1e308"))

    @classmethod
    def from_json(cls, d: Any, what: str = "device profile") -> "DeviceProfile":
        """A profile from JSON data, every field checked (cnnprof.predict.profile_file); unknown keys ignored."""
        fields = checked(d, what)
        fields["calibration"] = {k: TypeFit(**v) for k, v in fields["calibration"].items()}
        return cls(**fields)


def datasheet(name: str) -> DeviceProfile:
    """A known GPU's datasheet peaks (not measured)."""
    import torch

    from cnnprof.predict.gpu import datasheets  # gpus.yaml: the GPUs the efficiency model knows, with sources

    sheets = datasheets()
    key = name.lower().replace("-", "").replace(" ", "")
    if key not in sheets:
        raise CnnprofError(f"unknown {parameter('device_spec')} {name!r}; choose one of {', '.join(sheets)} or a "
                           f"profile .json")
    spec = sheets[key]
    return DeviceProfile(device="cuda", name=spec["name"], torch_version=torch.__version__, threads=0,
                         source="datasheet", peak_flops=dict(spec["peak"]), bandwidth=spec["bandwidth"],
                         op_overhead_s=GPU_LAUNCH_S)


def load_profile_file(path: str | Path) -> DeviceProfile:
    """A profile saved as JSON (what `cnnprof device` prints as JSON, or a cache file)."""
    what = parameter("device_spec", path)
    profile = DeviceProfile.from_json(read_json(path, what), what)
    return dataclasses.replace(profile, source=profile.source if profile.source == "datasheet" else "file")


def device_name(device: str) -> str:
    """The GPU's or the CPU's model name."""
    import torch

    from cnnprof.timing.settings import cpu_name

    return torch.cuda.get_device_name() if device == "cuda" else cpu_name()


def cache_dir() -> Path:
    """Where measured profiles are cached: $CNNPROF_CACHE_DIR, else the user cache directory."""
    env = os.environ.get("CNNPROF_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cnnprof"))


def cache_path(device: str, dtype: str = "float32", legacy: bool = False) -> Path:
    """Cache file of `device` for this torch version, thread count and calibration `dtype` (a bfloat16 profile
    no longer overwrites the float32 one). `legacy`: the name before the dtype was in it, read for float32."""
    import torch

    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    stem = f"device-{device}-{slug}-torch{torch.__version__}-t{torch.get_num_threads()}"
    return cache_dir() / (f"{stem}.json" if legacy else f"{stem}-{dtype}.json")


def cached_profile(device: str, warn: Callable[[str], None] | None = None,
                   dtype: str = "float32") -> DeviceProfile | None:
    """The cached profile of `device` at this torch version, thread count and calibration `dtype`, or None; a
    bad cache file is None too (measured again), and `warn` hears why in one line. For float32 a cache file of
    the old name (no dtype) is read too, when it holds a float32 calibration."""
    path = cache_path(device, dtype)
    if not os.path.lexists(path) and dtype == "float32":
        path = cache_path(device, legacy=True)
    if not os.path.lexists(path):
        return None
    try:
        profile = DeviceProfile.from_json(read_json(path, str(path)), str(path))
    except ProfileError as exc:
        if warn is not None:
            warn(f"ignoring the cached device profile: {exc}")
        return None
    if profile.calibration_dtype != dtype:
        return None
    for doubt in doubts(profile) if warn is not None else ():
        warn(f"the cached device profile {path.name} is doubtful: {doubt} (measure it again with `cnnprof device` "
             f"on an idle machine)")
    return profile


def save_profile(profile: DeviceProfile, warn: Callable[[str], None] | None = None) -> Path | None:
    """Cache a measured profile; returns the file, or None when the cache cannot be written (`warn` hears why:
    the profile is then used for this run only)."""
    path = cache_path(profile.device, profile.calibration_dtype)
    if profile.busy:
        if warn is not None:
            warn(f"not caching the device profile: {profile.busy}; it is used for this run only (measure again on "
                 f"an idle machine)")
        return None
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(profile.to_json(), indent=2))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if warn is not None:
            warn(f"cannot cache the device profile in {path.parent}: {exc.strerror or exc}; it is used for this "
                 f"run only")
        return None
    return path


def resolve_profile(spec: str | None, device: str = "cpu", calibrate: Callable[[], DeviceProfile] | None = None,
                    warn: Callable[[str], None] | None = None, dtype: str = "float32") -> DeviceProfile:
    """The profile named by `spec` (the CLI's device spec): a datasheet name, a profile .json, or None (this
    device's cached profile calibrated at `dtype`; measured now with `calibrate` when there is none)."""
    if spec:
        return load_profile_file(spec) if spec.endswith(".json") or os.path.exists(spec) else datasheet(spec)
    profile = cached_profile(device, warn, dtype)
    if profile is None:
        if calibrate is None:
            raise CnnprofError(f"no device profile cached for {device}; measure one first (cnnprof.predict.latency."
                               f"calibrate, or the `cnnprof device` command) or pass {parameter('spec')}")
        profile = calibrate()
    return profile


# ----------------------------------------------------------------------------- measurement

# The CPU clock of every measurement: the one timer's (cnnprof.timing.timer.CLOCK, the same list), kept here
# where benchmarks/latency_prediction.py and tests have swapped it.
CLOCK: list[Callable[[], float]] = timer.CLOCK
CUDA_BATCH = 10  # calls per sample on CUDA: back-to-back launches, timed as a model runs them


def time_call(fn: Callable[[], Any], device: str, min_time: float = 0.2, min_runs: int = 5, warmup: int = 2) -> float:
    """Median seconds per call of `fn` after `warmup` calls, with the one measurement loop: each call timed
    on the CPU; on CUDA, events around batches of calls (so back-to-back launches are timed as a model runs
    them), each batch synchronised."""
    rule = timer.StopRule(min_time=min_time, min_runs=min_runs)
    return timer.measure(fn, device, rule, warmup=timer.StopRule.calls(warmup),
                         number=CUDA_BATCH if device == "cuda" else 1, sync_each=True).median_s


def time_gap(a: Callable[[], Any], b: Callable[[], Any], device: str, min_time: float = 0.3,
             min_rounds: int = 30, b_times_itself: bool = False) -> float:
    """Median over rounds of (seconds of one call of `a`) - (seconds of one call of `b`), the two timed back to
    back in every round: a machine whose speed drifts (other tenants, clock frequency) moves both alike, so a
    small gap between two long calls is measured where two separate medians would drown it. `b_times_itself`:
    `b` returns its own seconds (the timed part of what it does)."""
    rule, gaps, spent = timer.StopRule.calls(1), [], 0.0
    with timer.gc_paused():
        for _ in range(2):  # warm-up
            a(), b()
        while len(gaps) < min_rounds or spent < min_time:
            ta = timer.measure(a, device, rule, sync_each=True).times_s[0]
            tb = b() if b_times_itself else timer.measure(b, device, rule, sync_each=True).times_s[0]
            gaps.append(ta - tb)
            spent += ta + tb
    return stats.median(gaps)


def measure_gemm(device: str, dtype: str, n: int, min_time: float) -> float:
    """Attained FLOP/s (2 per MAC) of an n x n x n matrix product."""
    import torch

    from cnnprof.timing.settings import DTYPES

    a = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    out = torch.empty(n, n, device=device, dtype=DTYPES[dtype])
    t = time_call(lambda: torch.mm(a, b, out=out), device, min_time=min_time, min_runs=3, warmup=1)
    return 2 * n**3 / t


def measure_bandwidth(device: str, nbytes: int, min_time: float) -> tuple[float, float]:
    """(copy, triad) attained bytes/s on float32 arrays of `nbytes` each (STREAM's accounting)."""
    import torch

    n = nbytes // 4
    a, b, c = (torch.rand(n, device=device) for _ in range(3))
    copy = 2 * nbytes / time_call(lambda: a.copy_(b), device, min_time=min_time, min_runs=3)
    triad = 3 * nbytes / time_call(lambda: torch.add(b, c, alpha=3.0, out=a), device, min_time=min_time, min_runs=3)
    return copy, triad


def measure_overheads(device: str, min_time: float) -> tuple[float, float, float]:
    """(per-op dispatch / launch overhead, per-module call overhead, per-view overhead) in seconds: time
    of a 1-element op, of calling an nn.Identity module, and of a view."""
    import torch

    x = torch.ones(1, device=device)
    op = time_call(lambda: torch.relu(x), device, min_time=min_time, min_runs=100)
    ident = torch.nn.Identity()
    module = time_call(lambda: ident(x), device, min_time=min_time, min_runs=100)
    view = time_call(lambda: x.view(1, 1), device, min_time=min_time, min_runs=100)
    return op, module, view
