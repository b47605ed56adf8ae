"""Measured peak memory of one call, to check the prediction of cnnprof.counting.footprint against.

CUDA: torch.cuda.max_memory_allocated() after a reset (every byte the caching allocator handed out, absolute).
CPU: the CPU allocator reports every allocation and free to the profiler (torch.profiler with
profile_memory=True); the running total of those memory events over one call gives the most bytes that were
allocated at once during it, above what was live when it started. What was live before (parameters,
buffers, inputs, optimizer state) is known tensor by tensor and added: the measured peak is that resident
size plus the allocator's peak over the call. Allocations outside PyTorch's allocator (oneDNN scratch pads,
the Python heap) are not seen; the process's RSS would see them, but also every unrelated allocation.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from cnnprof.counting.footprint import storage_bytes

__all__ = ["cpu_allocator_peak", "peak_bytes", "resident_bytes"]


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what the profiler's native library prints to file descriptor 2 (start/stop notes) for the call."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_allocator_peak(call: Callable[[], Any]) -> int:
    """Most bytes the CPU allocator had handed out at once during one `call()`, above what was live before it
    (the running total of the profiler's memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type()
              == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def resident_bytes(model: torch.nn.Module, inputs: Any = (), optimizer: Any = None) -> int:
    """Bytes of the distinct storages of the parameters, buffers, `inputs` and the optimizer's state."""
    state = [v for s in optimizer.state.values() for v in s.values()] if optimizer is not None else []
    return storage_bytes([*model.parameters(), *model.buffers(), *inputs, *state])


def peak_bytes(call: Callable[[], Any], device: str, resident: int) -> int:
    """Measured peak bytes of one `call()` on `device` (see the module docstring); `resident`: the bytes live
    before it on the CPU (resident_bytes), unused on CUDA, whose counter is absolute."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        call()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    return resident + cpu_allocator_peak(call)
