"""A model made ready to time, shared by bench and the interleaved rounds: built on the device in the
benchmark dtype and memory format, its real inputs made and bound into a call without arguments, the
configuration refused beforehand when its memory estimate cannot fit, and a failure turned into a result
row's status and one-line error (an out-of-memory failure is a status of its own).

Building and counting run outside inference mode, also inside device_settings: a user's module is converted
in place by .to(), and its parameters must stay normal tensors once the measurement is over.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from cnnprof.errors import CnnprofError, first_line, parameter
from cnnprof.inputs import make_inputs, split
from cnnprof.timing.settings import DTYPES
from cnnprof.timing.timer import Measurement, StopRule

@dataclass(frozen=True)
class Plan:
    """How every model of one measurement is prepared and timed (the settings of benchmark and
    interleaved_benchmark)."""

    device: str = "cpu"
    dtype: str = "float32"
    channels_last: bool = False
    warmup: float = 0.5
    min_time: float = 1.0
    min_runs: int = 5
    compile: bool = False
    breakdown: bool = False
    auto_batch: bool = False
    mode: str = "infer"  # infer: forward passes; train: training steps (cnnprof.counting.footprint.train_step)
    optimizer: str = "sgd"  # the optimizer of a training step


def check_plan(plan: Plan) -> None:
    """Refuse a mode or optimizer that does not exist, and a breakdown of training steps (it times forward ops)."""
    from cnnprof.counting.footprint import MODES, OPTIMIZERS

    if plan.mode not in MODES:
        raise CnnprofError(f"{parameter('mode', plan.mode)}: expected infer or train")
    if plan.optimizer not in OPTIMIZERS:
        raise CnnprofError(f"{parameter('optimizer', plan.optimizer)}: expected one of {', '.join(OPTIMIZERS)}")
    if plan.mode == "train" and plan.breakdown:
        raise CnnprofError(f"{parameter('breakdown')} times the ops of a forward pass; drop it or use "
                           f"{parameter('mode', 'infer')}")


def modes(plan: Plan) -> dict[str, Any]:
    """The BenchResult fields that say what was timed: the mode, and the optimizer of a training step."""
    return dict(mode=plan.mode, optimizer=plan.optimizer if plan.mode == "train" else None)


def is_oom(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError and the CPU allocator's failure all count as OOM."""
    text = str(exc).lower()
    return (isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in text
            or "can't allocate memory" in text or "defaultcpuallocator" in text)


def failure(exc: BaseException) -> tuple[str, str]:
    """(status, one-line error) of a failed measurement."""
    if is_oom(exc):
        on_cuda = isinstance(exc, torch.cuda.OutOfMemoryError) or "cuda" in str(exc).lower()
        return "oom", "out of memory" + ("" if on_cuda else " (CPU allocation failed)")
    return "error", f"{type(exc).__name__}: {first_line(exc)}"


def predicted_peak(meta_model: nn.Module | None, inputs: Any, device: str, dtype: str, mode: str = "infer",
                   optimizer: str = "sgd") -> int | None:
    """Predicted peak bytes of one call (cnnprof.counting.footprint), or None when it cannot be made."""
    from cnnprof.counting.footprint import estimate_bytes

    if meta_model is None:
        return None
    try:
        with torch.inference_mode(False):
            return estimate_bytes(meta_model, inputs, dtype, mode, optimizer, device)
    except Exception:  # noqa: BLE001 - no estimate: let the measurement itself find out
        return None


def memory_refusal(meta_model: nn.Module | None, inputs: Any, device: str, dtype: str, mode: str = "infer",
                   optimizer: str = "sgd") -> tuple[int, str] | None:
    """(needed bytes, reason) when the configuration cannot fit in free memory, else None (also when the
    estimate itself cannot be made: then the real run decides)."""
    from cnnprof.counting.footprint import fits, gib

    needed = predicted_peak(meta_model, inputs, device, dtype, mode, optimizer)
    if needed is None:
        return None
    ok, free = fits(needed, device)
    if ok:
        return None
    where = "free device memory" if device == "cuda" else "available RAM"
    return needed, f"out of memory: needs about {gib(needed)}, {gib(free)} {where}; not attempted"


def prepare(source: Any, device: str, dtype: str, channels_last: bool, compile: bool,
            train: bool = False) -> nn.Module:
    """The model of `source` on `device` in `dtype` (and channels_last), in eval (or train) mode, compiled if
    asked."""
    with torch.inference_mode(False):
        net = source.build(device).to(dtype=DTYPES[dtype])
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
    net.train(train)
    return torch.compile(net) if compile else net


def real_inputs(specs: Sequence[Any], device: str, dtype: str, channels_last: bool) -> tuple[tuple, dict]:
    """Tensors for `specs` on `device`: float inputs in the benchmark dtype, others as specified."""
    with torch.inference_mode(False):
        args, kwargs = make_inputs(*split(specs), real=True)

        def place(t: torch.Tensor) -> torch.Tensor:
            t = t.to(device=device, dtype=DTYPES[dtype] if t.is_floating_point() else t.dtype)
            return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t

        return tuple(place(a) for a in args), {k: place(v) for k, v in kwargs.items()}


def bound_call(net: nn.Module, specs: Sequence[Any], device: str, dtype: str,
               channels_last: bool) -> Callable[[], Any]:
    """A call without arguments that runs `net` on real inputs of `specs`: what the timer times."""
    args, kwargs = real_inputs(specs, device, dtype, channels_last)
    return lambda: net(*args, **kwargs)


@dataclass
class Bound:
    """A call without arguments that the timer times (a forward pass, or a training step), and the bytes that
    are resident while it runs (parameters, buffers, inputs, optimizer state), what a measured CPU peak adds to
    the allocator's peak over the call (cnnprof.timing.peak)."""

    call: Callable[[], Any]
    resident: int


def bind(net: nn.Module, specs: Sequence[Any], plan: Plan) -> Bound:
    """The call of `plan.mode` on real inputs of `specs`: `net` on them, or a training step with a fresh
    `plan.optimizer` (its state created at once, as after a first step; foreach on CUDA, its default there)."""
    from cnnprof.counting.footprint import make_optimizer, prime_optimizer, train_step
    from cnnprof.timing.peak import resident_bytes

    args, kwargs = real_inputs(specs, plan.device, plan.dtype, plan.channels_last)
    given = [*args, *kwargs.values()]
    if plan.mode != "train":
        return Bound(lambda: net(*args, **kwargs), resident_bytes(net, given))
    with torch.inference_mode(False):
        opt = make_optimizer(plan.optimizer, net.parameters(), foreach=plan.device == "cuda")
        prime_optimizer(opt)

    def step() -> None:
        with torch.inference_mode(False), torch.enable_grad():
            train_step(net, opt, args, kwargs)

    return Bound(step, resident_bytes(net, given, opt))


def warm_up(seconds: float) -> StopRule:
    """The warm-up of a model: at least one call, then calls until `seconds` of wall time have passed."""
    return StopRule(min_time=seconds, min_runs=1, wall=True)


def reset_peak(device: str) -> None:
    """Start counting the CUDA peak memory afresh (nothing to do on the CPU)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def started(m: Measurement, device: str, compile: bool) -> dict[str, Any]:
    """The BenchResult fields of a cold call and warm-up: cold and compile time, warm-up runs, CUDA peaks."""
    cuda = device == "cuda"
    return dict(cold_s=m.cold_s, compile_s=m.cold_s if compile else None, warmup_runs=m.warmup_runs,
                peak_allocated=torch.cuda.max_memory_allocated() if cuda else None,
                peak_reserved=torch.cuda.max_memory_reserved() if cuda else None)


def memory_fields(bound: Bound, meta_model: nn.Module | None, specs: Sequence[Any], plan: Plan) -> dict[str, Any]:
    """The BenchResult fields of memory: the peak of one more (untimed) call, measured (cnnprof.timing.peak), next
    to the peak predicted for it on meta (cnnprof.counting.footprint)."""
    from cnnprof.timing.peak import peak_bytes

    return dict(measured_peak=peak_bytes(bound.call, plan.device, bound.resident),
                predicted_peak=predicted_peak(meta_model, specs, plan.device, plan.dtype, plan.mode, plan.optimizer))


def release(device: str) -> None:
    """Free what the measured models held: a collection, and the CUDA cache emptied."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
