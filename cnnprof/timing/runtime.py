"""Measured forward-pass time on CPU or CUDA, taken the way torch.utils.benchmark and timm do.

Protocol: eval() + inference_mode; input created on the device; the first (cold) call is timed and
reported on its own (with `compile` it includes compilation); warm-up runs for `warmup` seconds and
is excluded; then every call is timed until `min_time` seconds and `min_runs` calls are reached
(cnnprof.timing.timer: perf_counter on the CPU, CUDA events and one synchronisation on the GPU).
cudnn.benchmark is on for CUDA, the thread count and cudnn.benchmark are restored afterwards
(cnnprof.timing.settings). Measure -> data: the result keeps the raw per-call times and derives the
statistics; nothing here prints.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from torch import nn

from cnnprof.errors import CnnprofError, parameter
from cnnprof.timing.breakdown import breakdown as type_breakdown
from cnnprof.timing.prepare import (
    Plan, bind, check_plan, failure, memory_fields, memory_refusal, modes, prepare, release, reset_peak, started,
    warm_up)
from cnnprof.timing.results import BenchResult, Environment, TypeTiming
from cnnprof.timing.settings import DTYPES, check_device, device_settings, validate_timing
from cnnprof.timing.timer import StopRule, measure

# Also the names the CLI and the API import from here (the checks live in cnnprof.timing.settings).
__all__ = ["benchmark", "BenchResult", "Environment", "TypeTiming", "DTYPES", "check_device", "validate_timing"]


def benchmark(model: Any, input_shape: Sequence[int] | None = None, device: str = "cpu", *,
              batch_sizes: Sequence[int] | None = None, dtype: str = "float32", channels_last: bool = False,
              threads: int | None = None, warmup: float = 0.5, min_time: float = 1.0, min_runs: int = 5,
              compile: bool = False, breakdown: bool = False, overrides: dict | None = None,
              label: str | None = None, inputs: Any = None, mode: str = "infer", optimizer: str = "sgd"):
    """Measure forward latency of `model` (nn.Module or spec). Returns a BenchResult, or a list of them
    (one per batch size) when `batch_sizes` is given. `inputs`: shapes/specs as in count_flops (default: the
    model's declared input); real tensors are made of them: float inputs uniform in [0, 1) in `dtype`,
    int and bool inputs zero (a valid token id or class, an empty mask). `threads` and cudnn.benchmark are
    set for the measurement and restored after it. mode='train' times training steps (forward, loss, backward,
    `optimizer` step; cnnprof.counting.footprint.train_step). Each result also has the peak memory of one call,
    measured and predicted."""
    from cnnprof.counting.flops import count_flops, parse_shape
    from cnnprof.inputs import as_specs, with_batch_and_resolution
    from cnnprof.models.spec import model_inputs, resolve

    check_device(device)
    validate_timing(warmup, min_time, min_runs, threads, dtype)
    source = resolve(model, overrides)
    meta_model = source.build("meta") if source.module is None else None
    counted = replace(source, module=meta_model) if meta_model is not None else source
    if input_shape is not None:
        inputs = (parse_shape(input_shape, ()),)
    base = as_specs(*model_inputs(source, counted.module, inputs))
    if not base:
        raise CnnprofError(f"{source.label}: no tensor inputs to benchmark with; give {parameter('input_shape')}")
    specs_of = {s[0].shape: s for s in ([with_batch_and_resolution(base, b, None) for b in batch_sizes]
                                        if batch_sizes else [base])}
    macs = {shape: count_flops(counted, inputs=list(specs)).macs for shape, specs in specs_of.items()}
    plan = Plan(device=device, dtype=dtype, channels_last=channels_last, warmup=warmup, min_time=min_time,
                min_runs=min_runs, compile=compile, breakdown=breakdown, mode=mode, optimizer=optimizer)
    check_plan(plan)
    with device_settings(device, threads, dtype, channels_last, compiled=compile) as env:
        rows = [BenchResult(model=label or source.label, device=device, batch_size=shape[0], input_shape=shape,
                            dtype=dtype, env=env, macs=macs[shape], **modes(plan)) for shape in specs_of]
        results = _measure_all(source, meta_model, specs_of, rows, plan)
    return results if batch_sizes else results[0]


def _measure_all(source: Any, meta_model: nn.Module | None, specs_of: dict, rows: list[BenchResult],
                 plan: Plan) -> list[BenchResult]:
    """One result per input shape: measured, refused by the memory estimate, or the failure of the build."""
    try:
        net = prepare(source, plan.device, plan.dtype, plan.channels_last, plan.compile, plan.mode == "train")
    except Exception as exc:  # noqa: BLE001 - e.g. the weights alone do not fit on the GPU
        status, error = failure(exc)
        return [replace(row, status=status, error=error) for row in rows]
    results = []
    for row in rows:
        refused = memory_refusal(meta_model, specs_of[row.input_shape], plan.device, plan.dtype, plan.mode,
                                 plan.optimizer)
        if refused is not None:
            results.append(replace(row, status="oom", error=refused[1], needed_bytes=refused[0]))
        else:
            results.append(_measure(net, specs_of[row.input_shape], row, plan, meta_model))
    return results


def _measure(net: nn.Module, specs: Sequence[Any], row: BenchResult, plan: Plan,
             meta_model: nn.Module | None = None) -> BenchResult:
    """Cold call, warm-up and timed calls of `net` on real inputs of `specs` (and the breakdown when asked), then
    the peak memory of one more call; a failure is the row's status, not a crash. The CUDA peak memory counts
    from the end of the warm-up."""
    device, call, bound = plan.device, None, None
    try:
        bound = bind(net, specs, plan)
        call = bound.call
        m = measure(call, device, StopRule(min_time=plan.min_time, min_runs=plan.min_runs), cold=True,
                    warmup=warm_up(plan.warmup), on_warm=lambda: reset_peak(device))
        row = replace(row, times_s=m.times_s, **started(m, device, plan.compile),
                      **memory_fields(bound, meta_model, specs, plan))
        if plan.breakdown and not plan.compile:
            row = replace(row, breakdown=type_breakdown(call, device, plan.min_time))
        return row
    except Exception as exc:  # noqa: BLE001 - a failed measurement is a result row, not a crash
        status, error = failure(exc)
        return replace(row, status=status, error=error)
    finally:
        del call, bound, net
        release(device)
