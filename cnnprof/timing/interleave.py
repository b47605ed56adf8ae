"""Interleaved timing of several models: rounds A B C, B C A, C A B, ... so that a machine whose speed
drifts (shared VMs, thermal limits, other tenants) slows every model alike within a round.

Each round times every model for a slice of `min_time / rounds` wall seconds (median of the calls in the
slice, each call synchronised so that no model's work spills into the next slice); the ratio of a model to
the reference is taken per round, and the reported ratio is the median of those per-round ratios with a
95% percentile-bootstrap interval of that median (cnnprof.timing.stats). An interval that includes 1.0
means no measurable difference. Nothing here prints.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from cnnprof.timing.breakdown import breakdown as type_breakdown
from cnnprof.timing.prepare import (
    Plan, bind, check_plan, failure, memory_fields, memory_refusal, modes, prepare, release, reset_peak, started, warm_up)
from cnnprof.timing.results import BenchResult, Environment
from cnnprof.timing.settings import check_device, device_settings, validate_timing
from cnnprof.timing.stats import RatioStat, ratio_stat
from cnnprof.timing.timer import StopRule, measure

__all__ = ["interleaved_benchmark", "RatioStat", "ratio_stat", "ROUNDS"]

ROUNDS = 10  # minimum number of rounds; more when min_runs asks for more samples
NOT_STOPPED: Callable[[], bool] = lambda: False  # noqa: E731


@dataclass
class _Entry:
    source: Any
    result: BenchResult
    call: Callable[[], Any] | None = None  # the model on its inputs, ready to time
    times: list[float] = field(default_factory=list)  # every timed call
    per_round: list[float] = field(default_factory=list)  # median of each round's slice


def interleaved_benchmark(sources: Sequence[Any], inputs: Sequence[Any], device: str = "cpu", *,
                          dtype: str = "float32", channels_last: bool = False, threads: int | None = None,
                          warmup: float = 0.5, min_time: float = 1.0, min_runs: int = 5, compile: bool = False,
                          auto_batch: bool = False, breakdown: bool = False, stop: Callable[[], bool] = NOT_STOPPED,
                          mode: str = "infer", optimizer: str = "sgd",
                          ) -> tuple[list[BenchResult], list[RatioStat | None]]:
    """Time resolved models (ModelSource) on their inputs (per model: a shape, a sequence of InputSpecs, or
    None for the model's declared input) in interleaved rounds. Returns one BenchResult per
    model and, per model, its RatioStat against the first that ran (None for that one, for failed models and
    for models at another batch size). `stop()` is polled between slices: when it turns true, the results
    of the completed rounds are returned with status 'interrupted'. `threads` and cudnn.benchmark are set
    for the measurement and restored after it. mode='train' times training steps with `optimizer`
    (cnnprof.counting.footprint.train_step) instead of forward passes."""
    check_device(device)
    validate_timing(warmup, min_time, min_runs, threads, dtype)
    plan = Plan(device=device, dtype=dtype, channels_last=channels_last, warmup=warmup, min_time=min_time,
                min_runs=min_runs, compile=compile, breakdown=breakdown, auto_batch=auto_batch, mode=mode,
                optimizer=optimizer)
    check_plan(plan)
    with device_settings(device, threads, dtype, channels_last, compiled=compile) as env:
        entries = []
        for source, given in zip(sources, inputs):
            entries.append(_setup(source, given, plan, env))
            if stop():
                break
        live = _run_rounds([e for e in entries if e.result.status == "ok"], plan, stop)
        if breakdown and not compile and not stop():
            for e in live:
                e.result = replace(e.result, breakdown=type_breakdown(e.call, device, min_time))
    results = _results(entries, interrupted=stop())
    release(device)
    return results, _ratios(entries)


def _run_rounds(live: list[_Entry], plan: Plan, stop: Callable[[], bool]) -> list[_Entry]:
    """Rotating rounds until every model has max(ROUNDS, min_runs) of them; an interrupted round is
    dropped. Returns the models still measured (a failure in a slice ends that model's rounds)."""
    n_rounds = max(ROUNDS, plan.min_runs)
    budget = plan.min_time / n_rounds
    done = 0
    while live and done < n_rounds and not stop():
        order = live[done % len(live):] + live[:done % len(live)]  # rotate: no fixed position bias
        slices = _round(order, plan.device, budget, stop)
        if slices is None:
            break
        live = [e for e in live if e.result.status == "ok"]
        for e in live:
            e.per_round.append(slices[id(e)])
        done += 1
    return live


def _round(order: list[_Entry], device: str, budget: float, stop: Callable[[], bool]) -> dict[int, float] | None:
    """One slice per model in `order` (id -> median call time); None when `stop()` cut the round short."""
    slices = {}
    for e in order:
        if stop():
            break
        try:
            slices[id(e)] = _time_slice(e, device, budget)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - the others go on
            status, error = failure(exc)
            e.result = replace(e.result, status=status, error=error)
    if stop() and len(slices) < len(order):
        return None  # an incomplete round is dropped
    return slices


def _time_slice(entry: _Entry, device: str, budget: float) -> float:
    """Run calls for `budget` wall seconds (at least one); returns the slice's median call time."""
    m = measure(entry.call, device, StopRule(min_time=budget, min_runs=1, wall=True), sync_each=True)
    entry.times += m.times_s
    return m.median_s


def _results(entries: list[_Entry], interrupted: bool) -> list[BenchResult]:
    """The result of every model, with its timed calls and rounds; the models are let go."""
    results = []
    for e in entries:
        r = e.result
        if r.status == "ok":
            r = replace(r, times_s=tuple(e.times), rounds=len(e.per_round),
                        status="interrupted" if interrupted else "ok",
                        error="interrupted before the rounds completed" if interrupted else None)
        results.append(r)
        e.call = None
    return results


def _ratios(entries: list[_Entry]) -> list[RatioStat | None]:
    timed = [e for e in entries if e.per_round]
    ref = timed[0] if timed else None
    out: list[RatioStat | None] = []
    for e in entries:
        if ref is None or e is ref or not e.per_round or e.result.batch_size != ref.result.batch_size:
            out.append(None)
            continue
        n = min(len(e.per_round), len(ref.per_round))
        out.append(ratio_stat([a / b for a, b in zip(e.per_round[:n], ref.per_round[:n])]) if n else None)
    return out


def _halved(specs: tuple, batch: int) -> tuple:
    from cnnprof.inputs import with_batch_and_resolution

    return with_batch_and_resolution(specs, max(1, batch // 2), None)


def _jump(meta_model, specs, device, dtype, needed: int, mode: str = "infer", optimizer: str = "sgd") -> tuple:
    """The inputs at the largest batch of the halving sequence B, B/2, ... that the memory estimate says fits,
    from its values at 1, 2 and B. The estimate grows with the batch and bends upwards (a workspace of fixed
    size can dominate small batches, activations large ones), so the line through 1 and 2 is the least steep:
    it gives the largest candidate, which the caller checks, halving further should it not fit."""
    from cnnprof.counting.footprint import available_bytes, estimate_bytes
    from cnnprof.inputs import with_batch_and_resolution

    batch, free = specs[0].shape[0], available_bytes(device)
    try:
        with torch.inference_mode(False):
            one, two = (estimate_bytes(meta_model, with_batch_and_resolution(specs, b, None), dtype, mode, optimizer,
                                       device) if b < batch else needed for b in (1, 2))
    except Exception:  # noqa: BLE001 - no estimate: halve one step at a time
        return specs
    slopes = [d for d in (two - one, (needed - one) / (batch - 1)) if d > 0]
    if free is None or not slopes:
        return specs
    per_sample = min(slopes)
    fits = max(1, int((free - one) / per_sample) + 1)
    while batch > 1 and batch > fits:
        batch //= 2
    return with_batch_and_resolution(specs, max(1, batch), None)


def _shrink(meta_model, specs, device, dtype, auto_batch: bool, mode: str = "infer", optimizer: str = "sgd"):
    """(inputs that fit, refusal or None): with auto_batch, the batch is halved until the estimate (of an
    inference pass or a training step, cnnprof.counting.footprint) fits, the first jump straight from the
    estimate (no hundred estimates from a huge batch)."""
    how = dict(mode=mode, optimizer=optimizer)
    refused = memory_refusal(meta_model, specs, device, dtype, **how)
    if refused is not None and auto_batch and specs[0].shape[0] > 1:
        specs = _jump(meta_model, specs, device, dtype, refused[0], **how)
        refused = memory_refusal(meta_model, specs, device, dtype, **how)
    while refused is not None and auto_batch and specs[0].shape[0] > 1:
        specs = _halved(specs, specs[0].shape[0])
        refused = memory_refusal(meta_model, specs, device, dtype, **how)
    return specs, refused


def _as_specs(source: Any, model: Any, given: Any) -> tuple:
    """InputSpecs of one model: a plain shape, specs as given, or (None) the model's declared input."""
    from cnnprof.inputs import InputSpec, as_specs
    from cnnprof.models.spec import model_inputs

    if given is None:
        return as_specs(*model_inputs(source, model))
    if given and isinstance(given[0], int):
        return (InputSpec(tuple(given)),)
    return tuple(given)


def _setup(source: Any, given: Any, plan: Plan, env: Environment) -> _Entry:
    """Estimate memory, build, place the inputs, cold call and warm-up; a failure is the model's result row.
    With auto_batch a real out-of-memory failure also halves the batch and tries again."""
    with torch.inference_mode(False):  # built and counted as anywhere else (see cnnprof.timing.prepare)
        meta_model = source.build("meta") if source.module is None else None
        specs = _as_specs(source, meta_model if meta_model is not None else source.module, given)
    requested = specs[0].shape[0] if specs and specs[0].shape else 1
    while True:
        entry = _setup_once(source, meta_model, specs, plan, env)
        if not (plan.auto_batch and entry.result.status == "oom" and entry.result.batch_size > 1):
            entry.result = replace(entry.result, requested_batch_size=requested)
            return entry
        specs = _halved(specs, entry.result.batch_size)


def _setup_once(source: Any, meta_model: Any, specs: tuple, plan: Plan, env: Environment) -> _Entry:
    from cnnprof.counting.flops import count_flops

    requested = specs[0].shape[0] if specs and specs[0].shape else 1
    specs, refused = _shrink(meta_model, specs, plan.device, plan.dtype, plan.auto_batch, plan.mode, plan.optimizer)
    counted = replace(source, module=meta_model) if meta_model is not None else source
    with torch.inference_mode(False):
        macs = count_flops(counted, inputs=list(specs)).macs
    shape = specs[0].shape
    base = BenchResult(model=source.label, device=plan.device, batch_size=shape[0] if shape else 1,
                       input_shape=shape, dtype=plan.dtype, env=env, macs=macs, requested_batch_size=requested,
                       **modes(plan))
    entry = _Entry(source, base)
    if refused is not None:
        entry.result = replace(base, status="oom", error=refused[1], needed_bytes=refused[0])
        return entry
    try:
        model = prepare(source, plan.device, plan.dtype, plan.channels_last, plan.compile, plan.mode == "train")
        bound = bind(model, specs, plan)
        entry.call = bound.call
        reset_peak(plan.device)  # the peak of a model here includes its cold call and warm-up
        m = measure(entry.call, plan.device, None, cold=True, warmup=warm_up(plan.warmup))
        entry.result = replace(base, **started(m, plan.device, plan.compile),
                               **memory_fields(bound, meta_model, specs, plan))
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - a result row, not a crash
        status, error = failure(exc)
        entry.result, entry.call = replace(base, status=status, error=error), None
        gc.collect()  # what the failed model held goes now (the CUDA cache is emptied at the end)
    return entry
