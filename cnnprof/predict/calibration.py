"""Measure a device profile: peak FLOP/s per dtype (GEMM), memory bandwidth (copy, triad), per-op,
per-module and per-view overheads, then (with `micro`) every single-layer micro-benchmark of the grid
(cnnprof.predict.microbench), fitted per op type (cnnprof.predict.latency.fit_type). Every time is taken
by the one measurement loop (cnnprof.timing.timer, through cnnprof.predict.device.time_call).
"""
from __future__ import annotations

import time
from itertools import cycle
from math import ceil
from typing import Callable

from cnnprof.errors import CnnprofError
from cnnprof.predict import microbench, trust
from cnnprof.predict.device import (DeviceProfile, device_name, measure_bandwidth, measure_gemm, measure_overheads,
                                     time_call)

PEAK_DTYPES = ("float32", "bfloat16", "float16")
LATE = 0.6  # past this share of the time budget (a busy machine), time just a few calls per layer


class _Calibration:
    """The state of one calibration: what was measured so far, and the progress reported to `on_step`."""

    def __init__(self, device: str, dtype: str, quick: bool, on_step: Callable[[str, int, int], None] | None,
                 budget_s: float, grid: list) -> None:
        self.device, self.dtype, self.quick, self.on_step, self.budget_s, self.grid = (
            device, dtype, quick, on_step, budget_s, grid)
        self.cuda = device == "cuda"
        self.scale = 0.25 if quick else 1.0
        self.step, self.total = 0, len(PEAK_DTYPES) + 3 + len(grid)
        self.peaks: dict[str, float] = {}
        self.copy = self.triad = self.bandwidth = self.op = None
        self.module = self.view = 0.0
        self.samples: dict[str, list[tuple[float, float, float]]] = {}
        self.start = time.perf_counter()
        self.busy = ""

    def tick(self, label: str) -> None:
        """Report the step about to run."""
        if self.on_step:
            self.on_step(label, self.step, self.total)

    def gemm_peaks(self) -> None:
        """Attained FLOP/s of a large matrix product per dtype (a dtype without a GEMM kernel is skipped)."""
        for dt in PEAK_DTYPES:
            self.tick(f"peak GEMM {dt}")
            n = self.gemm_n(dt)
            try:
                self.peaks[dt] = measure_gemm(self.device, dt, n, (0.5 if dt == "float32" else 0.2) * self.scale)
            except RuntimeError:
                pass  # dtype without a GEMM kernel here: not measured
            self.step += 1

    def memory(self) -> None:
        """Copy and triad bandwidth, then the per-op, per-module and per-view overheads."""
        self.tick("memory bandwidth (copy, triad)")
        nbytes = (1 << 30) if self.cuda else (64 << 20 if not self.quick else 16 << 20)
        self.copy, self.triad = measure_bandwidth(self.device, nbytes, 0.3 * self.scale)
        self.bandwidth = max(self.copy, self.triad)
        self.step += 1
        self.tick("per-op and per-module overhead")
        self.op, self.module, self.view = measure_overheads(self.device, 0.2 * self.scale)
        self.step += 1

    def micro_benchmarks(self) -> None:
        """Time every layer of the grid, each on tensors colder than the last-level cache."""
        import torch

        from cnnprof.timing.settings import DTYPES

        with torch.inference_mode():
            for op_type, label, make in self.grid:
                self.tick(f"micro-benchmark {label}")
                f, b = microbench.features(make, self.dtype)
                # Cycle through enough copies of the layer's tensors to overflow the cache: in a forward
                # pass an op's weights were last touched a whole network ago, not by the previous call.
                copies = max(1, min(microbench.MAX_COPIES, ceil(microbench.cold_bytes(self.device) / max(b, 1.0))))
                fns = cycle([make(self.device, DTYPES[self.dtype]) for _ in range(copies)])
                late = time.perf_counter() - self.start > LATE * self.budget_s
                t = time_call(lambda: next(fns)(), self.device, min_time=0.0 if late else 0.12 * self.scale,
                              min_runs=3 if late else 5, warmup=1 if late else 2)
                self.samples.setdefault(op_type, []).append((f, b, t))
                self.step += 1

    def gemm_n(self, dt: str) -> int:
        n = (8192 if dt != "float32" else 4096) if self.cuda else (1024 if dt == "float32" else 384)
        return n // 2 if self.quick and not self.cuda else n

    def recheck(self) -> None:
        """Measure the float32 CPU peak again: a change since the start, or a peak under the sanity floor, means
        another process shared the CPU, and the profile is not cached (cnnprof.predict.trust)."""
        if self.cuda or "float32" not in self.peaks:
            return
        import torch

        self.tick("peak GEMM float32, again (is the machine idle?)")
        again = measure_gemm(self.device, "float32", self.gemm_n("float32"), 0.5 * self.scale)
        self.busy = trust.busy_reason(self.peaks["float32"], again, torch.get_num_threads(), trust.cpu_hz())
        self.peaks["float32"] = max(self.peaks["float32"], again)

    def floor_reason(self) -> str:
        """Why a CPU profile cut short before `recheck` is not to be cached: its peak under the sanity floor."""
        import torch

        return "" if self.cuda else trust.busy_reason(self.peaks["float32"], None, torch.get_num_threads(),
                                                     trust.cpu_hz())

    def profile(self, complete: bool) -> DeviceProfile:
        """The measured profile; the op types with at least 3 micro-benchmarks get a fit."""
        import torch

        from cnnprof.predict.latency import fit_type

        if "float32" not in self.peaks or self.bandwidth is None:
            raise CnnprofError("interrupted before the peaks were measured; nothing kept")
        return DeviceProfile(
            device=self.device, name=device_name(self.device), torch_version=torch.__version__,
            threads=torch.get_num_threads(), source="measured", peak_flops=self.peaks, bandwidth=self.bandwidth,
            op_overhead_s=self.op if self.op is not None else 0.0, module_overhead_s=self.module or 0.0,
            view_overhead_s=self.view or 0.0, copy_bandwidth=self.copy, triad_bandwidth=self.triad,
            calibration={k: fit_type(v) for k, v in self.samples.items() if len(v) >= 3},
            calibration_dtype=self.dtype, complete=complete, seconds=time.perf_counter() - self.start,
            busy=self.busy or self.floor_reason())


def calibrate(device: str = "cpu", dtype: str = "float32", *, quick: bool = False,
              on_step: Callable[[str, int, int], None] | None = None, micro: bool = True,
              budget_s: float = 50.0) -> DeviceProfile:
    """Measure peaks, overheads and (with `micro`) the per-op-type calibration of `device`, within about
    `budget_s` seconds. Ctrl-C stops early and returns what was measured (complete=False)."""
    from cnnprof.timing.settings import check_device, check_dtype

    check_device(device)
    check_dtype(dtype)
    run = _Calibration(device, dtype, quick, on_step, budget_s, microbench.grid() if micro else [])
    complete = True
    try:
        run.gemm_peaks()
        run.memory()
        run.micro_benchmarks()
        run.recheck()
    except KeyboardInterrupt:
        complete = False
    return run.profile(complete)
