"""Interleaved timing of several models: rounds A B C, B C A, C A B, ... so that a machine whose speed
drifts (shared VMs, thermal limits, other tenants) slows every model alike within a round.

Each round times every model for a slice of `min_time / rounds` seconds (median of the calls in the
slice); the ratio of a model to the reference is taken per round, and the reported ratio is the
median of those per-round ratios with a 95% percentile-bootstrap interval of that median. An interval
that includes 1.0 means no measurable difference. Nothing here prints.
"""
from __future__ import annotations

import gc
import random
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch

from cnnprof.timing.runtime import (
    BenchResult, _breakdown, _failure, _prepare, _real_inputs, _sync, check_device, environment, memory_refusal,
    validate_timing)

ROUNDS = 10  # minimum number of rounds; more when --min-runs asks for more samples


@dataclass(frozen=True)
class RatioStat:
    """Latency ratio of one model to the reference, from per-round ratios."""

    rounds: tuple[float, ...]
    median: float
    low: float  # 95% bootstrap interval of the median
    high: float

    @property
    def measurable(self) -> bool:
        """False when the interval includes 1.0: no measurable difference."""
        return not self.low <= 1.0 <= self.high

    @property
    def iqr(self) -> float:
        q = statistics.quantiles(self.rounds, n=4, method="inclusive") if len(self.rounds) > 1 else [self.median] * 3
        return q[2] - q[0]


def ratio_stat(ratios: Sequence[float], resamples: int = 2000, seed: int = 0) -> RatioStat:
    """Median of per-round ratios and a percentile-bootstrap 95% interval of that median (fixed seed)."""
    xs = tuple(ratios)
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(resamples))
    lo, hi = meds[int(0.025 * (resamples - 1))], meds[int(round(0.975 * (resamples - 1)))]
    return RatioStat(xs, statistics.median(xs), lo, hi)


@dataclass
class _Entry:
    source: Any
    result: BenchResult
    net: Any = None
    x: Any = None
    times: list[float] = None  # every timed call
    per_round: list[float] = None  # median of each round's slice


def _time_slice(entry: _Entry, device: str, budget: float) -> float:
    """Run calls for `budget` seconds (at least one); returns the slice's median call time."""
    calls: list[float] = []
    start = time.perf_counter()
    while not calls or time.perf_counter() - start < budget:
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            entry.net(entry.x)
            b.record()
            b.synchronize()
            calls.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            entry.net(entry.x)
            calls.append(time.perf_counter() - t0)
    entry.times += calls
    return statistics.median(calls)


def _halved(specs: tuple, batch: int) -> tuple:
    from cnnprof.inputs import with_batch_and_resolution

    return with_batch_and_resolution(specs, max(1, batch // 2), None)


def _shrink(meta_model, specs, device, dtype, auto_batch: bool):
    """(inputs that fit, refusal or None): with auto_batch, halve the batch until the estimate fits."""
    refused = memory_refusal(meta_model, specs, device, dtype)
    while refused is not None and auto_batch and specs[0].shape[0] > 1:
        specs = _halved(specs, specs[0].shape[0])
        refused = memory_refusal(meta_model, specs, device, dtype)
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


def interleaved_benchmark(sources: Sequence[Any], inputs: Sequence[Any], device: str = "cpu", *,
                          dtype: str = "float32", channels_last: bool = False, threads: int | None = None,
                          warmup: float = 0.5, min_time: float = 1.0, min_runs: int = 5, compile: bool = False,
                          auto_batch: bool = False, breakdown: bool = False, stop: Callable[[], bool] = lambda: False,
                          ) -> tuple[list[BenchResult], list[RatioStat | None]]:
    """Time resolved models (ModelSource) on their inputs (per model: a shape, a sequence of InputSpecs, or
    None for the model's declared input) in interleaved rounds. Returns one BenchResult per
    model and, per model, its RatioStat against the first that ran (None for that one, for failed models and
    for models at another batch size). `stop()` is polled between slices: when it turns true, the results
    of the completed rounds are returned with status 'interrupted'."""
    from cnnprof.counting.flops import count_flops

    check_device(device)
    validate_timing(warmup, min_time, min_runs, threads, dtype)
    if threads is not None:
        torch.set_num_threads(threads)
    env = environment(device, dtype, channels_last, compile)
    entries: list[_Entry] = []
    gc_was_enabled = gc.isenabled()
    previous_cudnn = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device == "cuda"
    try:
        for source, given in zip(sources, inputs):
            entries.append(_setup(source, given, device, dtype, channels_last, warmup, compile, auto_batch,
                                  env, count_flops))
            if stop():
                break
        live = [e for e in entries if e.result.status == "ok"]
        n_rounds = max(ROUNDS, min_runs)
        budget = min_time / n_rounds
        done = 0
        gc.disable()  # as timeit (and torch.utils.benchmark) do: no collector pauses inside timed calls
        with torch.inference_mode():
            while live and done < n_rounds and not stop():
                order = live[done % len(live):] + live[:done % len(live)]  # rotate: no fixed position bias
                slices = {}
                for e in order:
                    if stop():
                        break
                    try:
                        slices[id(e)] = _time_slice(e, device, budget)
                    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - the others go on
                        status, error = _failure(exc)
                        e.result = replace(e.result, status=status, error=error)
                if stop() and len(slices) < len(order):
                    break  # an incomplete round is dropped
                live = [e for e in live if e.result.status == "ok"]
                for e in live:
                    e.per_round.append(slices[id(e)])
                done += 1
        if gc_was_enabled:
            gc.enable()
        if breakdown and not compile and not stop():
            for e in live:
                e.result = replace(e.result, breakdown=_breakdown(e.net, e.x, device, min_time))
    finally:
        torch.backends.cudnn.benchmark = previous_cudnn
        if gc_was_enabled:
            gc.enable()
    interrupted = stop()
    results = []
    for e in entries:
        r = e.result
        if r.status == "ok":
            r = replace(r, times_s=tuple(e.times), rounds=len(e.per_round),
                        status="interrupted" if interrupted else "ok",
                        error="interrupted before the rounds completed" if interrupted else None)
        results.append(r)
        e.net = e.x = None
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return results, _ratios(entries)


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


def _setup(source, given, device, dtype, channels_last, warmup, compile, auto_batch, env, count_flops) -> _Entry:
    """Estimate memory, build, place the inputs, cold call and warm-up; a failure is the model's result row.
    With auto_batch a real out-of-memory failure also halves the batch and tries again."""
    meta_model = source.build("meta") if source.module is None else None
    specs = _as_specs(source, meta_model if meta_model is not None else source.module, given)
    requested = specs[0].shape[0] if specs and specs[0].shape else 1
    while True:
        entry = _setup_once(source, meta_model, specs, device, dtype, channels_last, warmup, compile, auto_batch,
                            env, count_flops)
        if not (auto_batch and entry.result.status == "oom" and entry.result.batch_size > 1):
            return replace_result(entry, requested_batch_size=requested)
        specs = _halved(specs, entry.result.batch_size)


def replace_result(entry: _Entry, **changes: Any) -> _Entry:
    entry.result = replace(entry.result, **changes)
    return entry


def _setup_once(source, meta_model, specs, device, dtype, channels_last, warmup, compile, auto_batch, env,
                count_flops) -> _Entry:
    requested = specs[0].shape[0] if specs and specs[0].shape else 1
    specs, refused = _shrink(meta_model, specs, device, dtype, auto_batch)
    counted = replace(source, module=meta_model) if meta_model is not None else source
    macs = count_flops(counted, inputs=list(specs)).macs
    shape = specs[0].shape
    base = BenchResult(model=source.label, device=device, batch_size=shape[0] if shape else 1, input_shape=shape,
                       dtype=dtype, env=env, macs=macs, requested_batch_size=requested)
    entry = _Entry(source, base, times=[], per_round=[])
    if refused is not None:
        entry.result = replace(base, status="oom", error=refused[1], needed_bytes=refused[0])
        return entry
    try:
        model = _prepare(source, device, dtype, channels_last, compile)
        args, kwargs = _real_inputs(specs, device, dtype, channels_last)
        # The timing loops call net(x): bind every input, so that x is only a placeholder.
        entry.net, entry.x = (lambda _x: model(*args, **kwargs)), None
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            t0 = time.perf_counter()
            entry.net(entry.x)
            _sync(device)
            cold = time.perf_counter() - t0
            runs, start = 0, time.perf_counter()
            while runs < 1 or time.perf_counter() - start < warmup:
                entry.net(entry.x)
                runs += 1
            _sync(device)
        peak = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()) if device == "cuda" else (None,) * 2
        entry.result = replace(base, cold_s=cold, compile_s=cold if compile else None, warmup_runs=runs,
                               peak_allocated=peak[0], peak_reserved=peak[1])
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001 - a result row, not a crash
        status, error = _failure(exc)
        entry.result, entry.net, entry.x = replace(base, status=status, error=error), None, None
        gc.collect()
    return entry
