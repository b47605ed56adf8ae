"""The one measurement loop of cnnprof: bench, the interleaved rounds of compare, the per-op breakdown, the
latency micro-benchmarks and the device peaks all time their calls here.

Built as torch.utils.benchmark's Timer is: one loop, whose strategies are parameters, and a Measurement as
every result. `measure(fn, device, rule, ...)` runs, in order: the cold (first) call, timed on its own
(`cold`); a warm-up, not timed (`warmup`, a StopRule); then samples of `number` calls each until `rule`
says stop. A device clock times a sample: on the CPU, CLOCK (perf_counter) before and after the calls; on
CUDA, events recorded on the stream around them (kernel time, not launch time), read after one
synchronisation, or after every sample with `sync_each` (when queued work must not spill into what runs
next, or a per-sample budget needs the times). The garbage collector is paused while samples are taken,
as timeit does. A budget (min_time) counts timed seconds on the CPU, as timeit does; on CUDA, whose event
times are known only after a synchronisation, and wherever a StopRule asks for `wall`, it counts wall
seconds since the loop began.
"""
from __future__ import annotations

import functools
import gc
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from cnnprof.errors import CnnprofError, parameter
from cnnprof.timing import stats

# The CPU clock of every measurement: samples, cold calls, warm-up and budgets (CUDA budgets use wall
# time). Tests swap in a fake clock; benchmarks/latency_prediction.py (its thread clock) swaps in
# time.thread_time (CPU time of the calling thread, single-threaded runs only) to check the latency model
# on a machine shared with other work, where wall time includes the time other processes ran.
CLOCK: list[Callable[[], float]] = [time.perf_counter]
MAX_RUNS = 10_000_000  # default cap on the samples of a loop: whatever the clock says, nothing loops forever


@dataclass(frozen=True)
class StopRule:
    """When a loop stops: once it has `min_runs` samples and `min_time` seconds, or at the latest at
    `max_runs` samples or `max_time` seconds. `wall`: count wall seconds since the loop began (a slice of a
    round, a warm-up) instead of the timed seconds of the samples."""

    min_time: float = 0.0
    min_runs: int = 1
    max_runs: int = MAX_RUNS
    max_time: float = math.inf
    wall: bool = False

    def __post_init__(self) -> None:
        for name in ("min_time", "max_time"):
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                raise CnnprofError(f"{parameter(name, value)}: expected a number of seconds from 0")
        for name in ("min_runs", "max_runs"):
            if getattr(self, name) < 0:
                raise CnnprofError(f"{parameter(name, getattr(self, name))}: expected 0 or more")

    @classmethod
    def calls(cls, n: int) -> "StopRule":
        """Exactly `n` samples, however long they take (a warm-up of n calls)."""
        return cls(min_runs=n, max_runs=n)

    def done(self, runs: int, elapsed: float) -> bool:
        """True when a loop with `runs` samples after `elapsed` seconds stops."""
        if runs >= self.max_runs or elapsed >= self.max_time:
            return True
        return runs >= self.min_runs and elapsed >= self.min_time


@dataclass(frozen=True)
class Measurement:
    """What one loop measured: seconds per call of every sample (a sample's time / `number`), the cold call
    (None when not timed) and the count of warm-up samples."""

    times_s: tuple[float, ...] = ()
    number: int = 1  # calls per sample
    cold_s: float | None = None
    warmup_runs: int = 0

    @property
    def runs(self) -> int:
        return len(self.times_s)

    @property
    def median_s(self) -> float | None:
        return stats.median(self.times_s)


class CpuClock:
    """Times a sample with CLOCK before and after its calls: readable at once, nothing to wait for."""

    reads_at_once = True  # a sample's time is known as soon as it ends

    def wall(self) -> float:
        """Seconds of the clock that budgets and cold calls are measured with."""
        return CLOCK[0]()

    def mark(self) -> float:
        """A time stamp taken before or after a sample's calls."""
        return CLOCK[0]()

    def elapsed(self, start: float, end: float) -> float:
        """Seconds between two marks."""
        return end - start

    def wait(self, mark: float) -> None:
        """Block until the work before `mark` is done (the CPU ran it already)."""

    def sync(self) -> None:
        """Block until all work queued on the device is done (none on the CPU)."""


class CudaClock:
    """Times a sample with CUDA events around its calls (GPU time of the queued kernels, not launch time),
    readable once the end event has completed; wall time is perf_counter."""

    reads_at_once = False

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda

    def wall(self) -> float:
        """Wall seconds (perf_counter): the GPU's time is known only after a synchronisation."""
        return time.perf_counter()

    def mark(self) -> Any:
        """An event recorded on the current stream."""
        event = self.cuda.Event(enable_timing=True)
        event.record()
        return event

    def elapsed(self, start: Any, end: Any) -> float:
        """Seconds between two completed events."""
        return start.elapsed_time(end) / 1e3

    def wait(self, mark: Any) -> None:
        """Block until the event `mark` has completed."""
        mark.synchronize()

    def sync(self) -> None:
        """Block until every kernel queued on the device has run."""
        self.cuda.synchronize()


def device_clock(device: str) -> CpuClock | CudaClock:
    """The clock that times calls on `device` (cpu or cuda)."""
    return CudaClock() if device == "cuda" else CpuClock()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the garbage collector (as timeit does): no collection pauses inside timed calls; restored after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.lru_cache(maxsize=1)
def _glibc() -> Any:
    """glibc's C library, or None where malloc is someone else's (macOS, musl, Windows)."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@functools.lru_cache(maxsize=1)  # once per process
def keep_freed_memory() -> None:
    """From the first CPU timing on, glibc's malloc keeps the memory that tensors free for the rest of the process:
    no trimming of the heap's top, no mmap / munmap per large block. Otherwise, depending on what the process
    allocated before, each forward pass can hand MBs back to the OS and fault them in again: mobilenet_v3_small
    took 9.7 ms a pass with 1,148 page faults in a fresh process on a VM, 5.9 ms with none once memory is kept,
    and two timings of one model disagreed by 20-90%. It is not undone: glibc's adaptive mmap threshold cannot
    be turned back on once set, and the fixed one it would leave faults on every block above 128 kB. Nothing
    changes where malloc is not glibc's (jemalloc and tcmalloc, which PyTorch's CPU guides recommend, keep
    memory too)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, -1)


def _loop(fn: Callable[[], Any], clock: Any, rule: StopRule, number: int = 1, sync_each: bool = False,
          timed: bool = True) -> tuple[int, list[tuple[Any, Any]]]:
    """Samples of `number` calls of `fn` until `rule` says stop: (samples, their (start, end) marks when
    `timed`; an untimed loop, a warm-up, counts wall seconds)."""
    by_wall = rule.wall or not timed or not clock.reads_at_once
    marks: list[tuple[Any, Any]] = []
    runs, spent = 0, 0.0
    start = clock.wall() if by_wall else 0.0
    while not rule.done(runs, clock.wall() - start if by_wall else spent):
        begin = clock.mark() if timed else None
        for _ in range(number):
            fn()
        if timed:
            end = clock.mark()
            if sync_each:
                clock.wait(end)
            if not by_wall:
                spent += clock.elapsed(begin, end)
            marks.append((begin, end))
        runs += 1
    return runs, marks


def _cold_call(fn: Callable[[], Any], clock: Any) -> float:
    """Wall seconds of one call, the device synchronised (on a fresh model: allocation, cudnn search, compile)."""
    t0 = clock.wall()
    fn()
    clock.sync()
    return clock.wall() - t0


def measure(fn: Callable[[], Any], device: str = "cpu", rule: StopRule | None = StopRule(), *, cold: bool = False,
            warmup: StopRule | None = None, number: int = 1, sync_each: bool = False,
            on_warm: Callable[[], Any] | None = None) -> Measurement:
    """Time `fn` (no arguments) on `device`: the cold call when `cold`, then the `warmup` calls (untimed, the
    device synchronised after them), then `on_warm()`, then samples of `number` calls until `rule` stops
    (none when `rule` is None), with the garbage collector paused."""
    if number < 1:
        raise CnnprofError(f"{parameter('number', number)}: expected 1 or more calls per sample")
    clock = device_clock(device)
    if device == "cpu":
        keep_freed_memory()
    cold_s = _cold_call(fn, clock) if cold else None
    warm = 0
    if warmup is not None:
        warm, _ = _loop(fn, clock, warmup, timed=False)
        clock.sync()
    if on_warm is not None:
        on_warm()
    if rule is None:
        return Measurement((), number, cold_s, warm)
    with gc_paused():
        _, marks = _loop(fn, clock, rule, number, sync_each)
        clock.sync()
    return Measurement(tuple(clock.elapsed(a, b) / number for a, b in marks), number, cold_s, warm)
