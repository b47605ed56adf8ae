"""Whether a measured device profile can be trusted, and one measurement at a time.

A profile measured while another process ran (a second `cnnprof device`, a build, a test suite) is slow
everywhere and would silently skew every later prediction. Three guards:
- a lock on the cache entry while measuring (`measuring`): two cnnprof processes measuring the same device,
  thread count and dtype take turns, and the second one uses the profile the first one cached;
- the measurement's own spread (`drift`): the float32 GEMM peak is measured again at the end; when the two
  differ by more than `MAX_DRIFT`, the machine was busy and the profile is not cached;
- a sanity floor that needs no datasheet (`floor`): every CPU since SSE2 / NEON does 4 float32 lanes with a
  multiply and an add per cycle, so a large GEMM under 4 FLOPs per cycle per thread (half of that) was slowed
  by something else. A cached profile under it, or with a poor calibration fit, is warned about when used.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator

MAX_DRIFT = 0.25  # relative change of the float32 GEMM peak between the start and the end of a calibration
FLOPS_PER_CYCLE = 4.0  # per thread: half of what baseline 128-bit SIMD (SSE2, NEON) attains on float32
MAX_FIT_ERROR = 0.5  # median relative error of an op type's calibration fit on its own micro-benchmarks


def cpu_hz(cpuinfo: str = "/proc/cpuinfo") -> float | None:
    """The fastest clock /proc/cpuinfo reports, in Hz; None where there is none (not Linux, no field)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    mhz = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "cpu mhz":
            with contextlib.suppress(ValueError):
                mhz.append(float(value))
    return max(mhz) * 1e6 if mhz else None


def floor(threads: int, hz: float | None) -> float | None:
    """Float32 FLOP/s (nvidia convention) a large GEMM beats on `threads` threads at `hz`, on any idle CPU."""
    return FLOPS_PER_CYCLE * max(threads, 1) * hz if hz else None


def drift(first: float, second: float) -> float:
    """Relative change between two measurements of the same peak (0: identical)."""
    return abs(first - second) / max(first, second) if max(first, second) > 0 else 0.0


def _giga(x: float) -> str:
    return f"{x / 1e9:.1f} GFLOP/s"


def busy_reason(peak: float, again: float | None, threads: int, hz: float | None) -> str:
    """Why a just-measured CPU profile must not be cached (its float32 GEMM peak, measured at the start and
    `again` at the end), or "" when it looks like an idle machine's."""
    if again is not None and drift(peak, again) > MAX_DRIFT:
        return (f"its float32 peak changed from {_giga(peak)} to {_giga(again)} while it was measured (more than "
                f"{MAX_DRIFT:.0%}): another process was using the CPU")
    low = floor(threads, hz)
    if low is not None and min(peak, again or peak) < low:
        return (f"its float32 peak {_giga(min(peak, again or peak))} is under {_giga(low)} ({FLOPS_PER_CYCLE:g} "
                f"FLOPs per cycle on each of {threads} thread{'' if threads == 1 else 's'} at "
                f"{hz / 1e9:.2f} GHz): another process was using the CPU")
    return ""


def doubts(profile: Any, hz: float | None = None) -> list[str]:
    """What makes a cached profile doubtful: a CPU peak under the floor, an op type fitted poorly."""
    out = []
    if profile.device == "cpu" and profile.source == "measured":
        low = floor(profile.threads, hz if hz is not None else cpu_hz())
        peak = profile.peak_flops.get("float32", 0.0)
        if low is not None and peak < low:
            out.append(f"its float32 peak {_giga(peak)} is under {_giga(low)}, what an idle CPU attains; it was "
                       f"probably measured on a busy machine")
    poor = sorted(k for k, fit in profile.calibration.items() if fit.median_error > MAX_FIT_ERROR)
    if poor:
        out.append(f"its calibration fits {', '.join(poor)} with a median error above {MAX_FIT_ERROR:.0%}")
    return out


@contextlib.contextmanager
def measuring(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold an exclusive lock on `path`'s lock file (`path` + ".lock") while a profile is measured; yields
    True when the lock is held, False where none can be taken (no fcntl, an unwritable cache directory: the
    measurement goes on unlocked). `on_wait` hears when another process holds it (we wait for it)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield False
        return
    lock = path.with_name(path.name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # closing releases the lock
