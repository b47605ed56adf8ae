"""The settings a measurement runs under, checked before anything runs and restored after it.

`device_settings` is the one place that sets CPU threads and cudnn.benchmark and enters inference_mode
(as torch.utils.benchmark sets threads for the duration of a measurement): whatever happens inside, the
caller's thread count and cudnn.benchmark come back. It yields the Environment the numbers are recorded with.
"""
from __future__ import annotations

import math
import os
import platform
from contextlib import contextmanager
from typing import Iterator

import torch

from cnnprof.errors import CnnprofError, DeviceError, parameter
from cnnprof.timing import timer
from cnnprof.timing.results import Environment

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MAX_SECONDS = 3600.0  # cap on warm-up and minimum time: a typo must not run for days
MAX_RUNS = 1_000_000


def check_device(device: str) -> None:
    """Raise DeviceError (exit 2) when the device cannot be used."""
    if device == "cpu":
        return
    if device != "cuda":
        raise DeviceError(f"unknown device {device!r}; choose cpu or cuda")
    if not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA"
        raise DeviceError(f"{parameter('device', 'cuda')} requested but CUDA is not available (torch "
                          f"{torch.__version__}, built with {built}); use {parameter('device', 'cpu')}")


def check_dtype(dtype: str) -> None:
    """Raise CnnprofError for a dtype the timing cannot run in."""
    if dtype not in DTYPES:
        raise CnnprofError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def validate_timing(warmup: float, min_time: float, min_runs: int, threads: int | None, dtype: str) -> None:
    """Raise CnnprofError for timing settings that cannot work (non-finite, negative, too many threads)."""
    check_dtype(dtype)
    for name, value in (("warmup", warmup), ("min_time", min_time)):
        if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
            raise CnnprofError(f"{parameter(name, value)}: expected a finite number of seconds from 0 to "
                               f"{MAX_SECONDS:g}")
    if min_runs < 1 or min_runs > MAX_RUNS:
        raise CnnprofError(f"{parameter('min_runs', min_runs)}: expected 1 to {MAX_RUNS}")
    cores = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cores:
        raise CnnprofError(f"{parameter('threads', threads)}: expected 1 to {cores} (the CPU cores of this machine)")


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str, dtype: str, channels_last: bool, compiled: bool) -> Environment:
    """The Environment of a measurement under the current thread count and cudnn.benchmark."""
    cuda = device == "cuda"
    return Environment(
        torch_version=torch.__version__, device=device,
        device_name=torch.cuda.get_device_name() if cuda else cpu_name(),
        threads=torch.get_num_threads(), dtype=dtype, channels_last=channels_last, compiled=compiled,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
    )


@contextmanager
def device_settings(device: str = "cpu", threads: int | None = None, dtype: str = "float32",
                    channels_last: bool = False, cudnn_benchmark: bool | None = None, *,
                    compiled: bool = False) -> Iterator[Environment]:
    """Set CPU threads (when given) and cudnn.benchmark (default: on for CUDA) and enter inference_mode (on the
    CPU, malloc keeps freed memory from now on: timer.keep_freed_memory); yield the Environment; restore the
    threads and cudnn.benchmark on exit, on error too."""
    previous_threads = torch.get_num_threads()
    previous_cudnn = torch.backends.cudnn.benchmark
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = device == "cuda" if cudnn_benchmark is None else cudnn_benchmark
        if device == "cpu":
            timer.keep_freed_memory()
        with torch.inference_mode():
            yield environment(device, dtype, channels_last, compiled)
    finally:
        torch.backends.cudnn.benchmark = previous_cudnn
        if torch.get_num_threads() != previous_threads:
            torch.set_num_threads(previous_threads)
