"""Iso-complexity matching: the value of one knob that makes a model cost what a reference costs
(ResNeXt's Table 2: for each cardinality C, the width per group d at ResNet-50's MACs).

Bracketing then bisection, assuming the metric is monotone in the knob; every evaluation is kept, and
when the evaluations show the metric is not monotone (or a bisection point is invalid) the search says
so and falls back to a scan of the bracket.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from cnnprof.design.knobs import check_knobs
from cnnprof.design.metrics import Point, Settings, evaluate, metric_value, parse_constraint, require
from cnnprof.design.sweep import Watch, grid, label
from cnnprof.errors import CnnprofError, parameter
from cnnprof.results import Printable

MAX_INT = 1 << 16  # bracketing never goes past this integer value
SCAN_POINTS = 64  # a fallback scan evaluates at most this many values


@dataclass(frozen=True)
class MatchRow:
    """The best value of the varied knob for one setting of the fixed knobs."""

    fixed: tuple[tuple[str, Any], ...]
    value: Any  # best knob value found (None when no valid value was found)
    point: Point | None
    metric_value: float | None
    deviation: float | None  # metric / target - 1
    method: str  # "bisection" | "scan"
    note: str
    evaluations: tuple[tuple[Any, float | None], ...]  # (knob value, metric) in evaluation order


@dataclass(frozen=True)
class MatchResult(Printable):
    """One match: the reference's cost, and per setting of the fixed knobs the value found for the varied one."""

    model: str
    knob: str
    metric: str
    convention: str
    target: float
    reference: str  # the reference model, or the target as given
    reference_point: Point | None
    settings: Settings
    rows: tuple[MatchRow, ...]
    complete: bool = True  # False when Watch.stop ended the match early: `rows` are the ones finished


# Plain decimal or scientific numbers only: YAML 1.1 would read 1:2:3 as base 60, 0x10 as hex, 1_000 as 1000.
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_TARGET = re.compile(r"^\s*([0-9.eE+-]+)\s*([a-zA-Zµ]*)\s*$")


def _bound(text: str) -> int | float | None:
    """One --range bound: an int when written as one, else a finite float; None when not a plain number."""
    text = text.strip()
    if not _NUMBER.match(text):
        return None
    value = int(text) if _INTEGER.match(text) else float(text)
    return value if math.isfinite(value) else None


def parse_range(text: str | None) -> tuple[float, float] | None:
    """'1:128' -> (1, 128) (ints stay ints); exactly two plain numbers, finite."""
    if text is None:
        return None
    parts = text.split(":")
    bounds = tuple(_bound(p) for p in parts) if len(parts) == 2 else (None, None)
    if any(b is None for b in bounds):
        raise CnnprofError(f"{parameter('bounds', repr(text))}: expected LOW:HIGH, two plain finite numbers, "
                           f"e.g. 1:128 or 0.1:2.0")
    if not bounds[0] < bounds[1]:
        raise CnnprofError(f"{parameter('bounds', repr(text))}: empty range (LOW must be below HIGH)")
    return bounds


def parse_target(metric: str, text: str | None) -> float | None:
    """A cost to match as text ('400M', '15ms') -> its value, read with the units of a constraint on `metric`:
    a plain positive finite number and the unit suffix the metric takes."""
    if text is None:
        return None
    given = parameter("target", repr(text))
    found = _TARGET.match(text)
    if not found or not _NUMBER.match(found.group(1)) or found.group(1)[0] in "+-":
        raise CnnprofError(f"{given}: expected a positive number with an optional unit, e.g. 400M or 15ms")
    try:
        value = parse_constraint(f"{metric}<={text.strip()}").bound
    except CnnprofError as exc:
        raise CnnprofError(f"{given}: {str(exc).partition(': ')[2] or exc}") from None
    if not math.isfinite(value) or value <= 0:
        raise CnnprofError(f"{given}: the cost to match must be a positive finite number")
    return value


def match(spec: str, knob: str, metric: str = "macs", *, reference: str | None = None, target: float | None = None,
          axes: Mapping[str, Sequence[Any]] | None = None, fixed: Mapping[str, Any] | None = None,
          bounds: tuple[float, float] | None = None, settings: Settings = Settings(), convention: str = "macc",
          tol: float = 1e-3, progress: Callable[[int, int], None] | None = None,
          watch: Watch = Watch()) -> MatchResult:
    """For every grid point of `axes`, find the `knob` value whose metric is closest to the reference's (see
    Watch for streaming rows, estimating the run from its first row and stopping between evaluations)."""
    axes, fixed = dict(axes or {}), dict(fixed or {})
    require(metric, settings)
    if knob in axes or knob in fixed:
        raise CnnprofError(f"--vary {knob}: also given with --set; vary it or set it, not both")
    check_knobs(spec, [knob, *axes, *fixed])
    if (reference is None) == (target is None):
        raise CnnprofError("give the reference model (--to MODEL) or a number (--target VALUE), one of them")
    ref_point = None
    if reference is not None:
        ref_point = evaluate(reference, {}, settings)
        if not ref_point.ok:
            raise CnnprofError(f"reference {reference}: {ref_point.error}")
        target = metric_value(ref_point, metric, convention)
    result = MatchResult(label(spec, fixed), knob, metric, convention, float(target), reference or "the target",
                         ref_point, settings, ())
    rows = []
    cells = grid(axes)
    for i, shown in enumerate(cells):
        start = time.perf_counter()
        try:
            rows.append(_match_one(spec, knob, metric, target, {**fixed, **shown}, shown, bounds, settings,
                                   convention, tol, watch.stop))
        except _Stopped:
            return replace(result, rows=tuple(rows), complete=False)
        if i == 0 and watch.on_first:
            watch.on_first(len(cells), time.perf_counter() - start)
        if watch.on_part:
            watch.on_part(replace(result, rows=(rows[-1],)))
        if progress:
            progress(i + 1, len(cells))
    return replace(result, rows=tuple(rows))


def _base_value(spec: str, knob: str, setting: dict) -> Any:
    from cnnprof.models.spec import resolve

    source = resolve(spec, setting)
    if source.config is None or knob not in dict(source.config.params):
        raise CnnprofError(f"--vary {knob}: no value in the config to start from; give --range LOW:HIGH")
    value = source.config.param(knob)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CnnprofError(f"--vary {knob}: must be a number, the config has {value!r}")
    return value


def _match_one(spec, knob, metric, target, setting, shown, bounds, settings, convention, tol, stop=None) -> MatchRow:
    start = bounds if bounds is not None else (_base_value(spec, knob, setting),)
    integer = all(isinstance(b, int) for b in start)
    cache: dict[Any, tuple[Point, float | None]] = {}
    order: list[Any] = []

    def f(x):
        x = int(x) if integer else float(x)
        if stop is not None and stop():
            raise _Stopped()
        if x not in cache:
            point = evaluate(spec, {**setting, knob: x}, settings, knobs={**shown, knob: x})
            cache[x] = (point, metric_value(point, metric, convention))
            order.append(x)
        return cache[x][1]

    lowest = 1 if integer else 0.0
    method, note = "bisection", ""
    try:
        lo, hi = _bracket(f, start, target, integer, lowest)
        if lo is not None:
            lo, hi = _bisect(f, lo, hi, target, integer, tol)
    except _NotMonotone as why:
        lo = hi = None
        method, note = "scan", str(why)
    if method == "bisection" and not _monotone([(x, cache[x][1]) for x in order]):
        method, note = "scan", f"{metric} is not monotone in {knob}"
    if method == "scan":
        xs = [x for x in order if cache[x][1] is not None] or list(start)
        lo_s, hi_s = (bounds if bounds is not None else (min(xs), max(xs)))
        for x in _scan_values(lo_s, hi_s, integer):
            f(x)
        note = f"{note}; scanned {knob} in [{lo_s}, {hi_s}]"
    elif lo is None:
        note = f"target not reached within the knob's range ({hi})"
    valid = [(x, cache[x]) for x in order if cache[x][1] is not None]
    evaluations = tuple((x, cache[x][1]) for x in order)
    if not valid:
        errors = {cache[x][0].error for x in order}
        return MatchRow(tuple(shown.items()), None, None, None, None, method,
                        f"no valid value of {knob}: {'; '.join(sorted(e for e in errors if e))}", evaluations)
    best, (point, value) = min(valid, key=lambda item: (abs(item[1][1] - target), item[0]))
    return MatchRow(tuple(shown.items()), best, point, value, value / target - 1 if target else None, method,
                    note.strip("; "), evaluations)


class _NotMonotone(Exception):
    pass


class _Stopped(Exception):
    """Watch.stop asked to end the match: the row being searched is dropped, the finished ones kept."""


def _bracket(f, start, target, integer, lowest):
    """(lo, hi) with target between f(lo) and f(hi); (None, bound) when the knob's range cannot reach it."""
    if len(start) == 2:
        lo, hi = start
        flo, fhi = f(lo), f(hi)
        if flo is None or fhi is None:
            raise _NotMonotone("an end of --range is invalid")
        if (flo - target) * (fhi - target) > 0:
            return None, lo if abs(flo - target) < abs(fhi - target) else hi
        return lo, hi
    x0 = start[0]
    f0 = f(x0)
    if f0 is None:
        raise _NotMonotone(f"the starting value {x0} is invalid")
    if f0 == target:
        return x0, x0
    step = 2
    x1 = max(x0 + 1, x0 * step) if integer else x0 * step
    f1 = f(x1)
    if f1 is None:
        raise _NotMonotone(f"value {x1} is invalid")
    if f1 == f0:
        raise _NotMonotone("the metric does not change with the knob near its start")
    increasing = f1 > f0
    up = (target > f0) == increasing  # does the target need a larger knob value?
    a, fa = (x1, f1) if up else (x0, f0)
    for _ in range(64):
        b = (max(a + 1, a * step) if up else max(lowest, a // step)) if integer else (a * step if up else a / step)
        if (integer and (b > MAX_INT or b == a)) or (not integer and (b > 1e12 or b < 1e-12)):
            return None, a
        fb = f(b)
        if fb is None:
            raise _NotMonotone(f"value {b} is invalid")
        if (fa - target) * (fb - target) <= 0:
            return (a, b) if a < b else (b, a)
        a, fa = b, fb
    return None, a


def _bisect(f, lo, hi, target, integer, tol):
    flo = f(lo)
    increasing = f(hi) >= flo
    while (hi - lo > 1) if integer else (hi - lo > tol * max(abs(hi), 1e-12)):
        mid = (lo + hi) // 2 if integer else (lo + hi) / 2
        fm = f(mid)
        if fm is None:
            raise _NotMonotone(f"value {mid} is invalid")
        if (fm < target) == increasing:
            lo = mid
        else:
            hi = mid
    return lo, hi


def _monotone(pairs: list[tuple[Any, float | None]]) -> bool:
    ys = [y for _, y in sorted(p for p in pairs if p[1] is not None)]
    diffs = [b - a for a, b in zip(ys, ys[1:])]
    return all(d >= 0 for d in diffs) or all(d <= 0 for d in diffs)


def _scan_values(lo, hi, integer) -> list[Any]:
    if integer:
        lo, hi = int(lo), int(hi)
        if hi - lo + 1 <= SCAN_POINTS:
            return list(range(lo, hi + 1))
        return sorted({round(lo + (hi - lo) * i / (SCAN_POINTS - 1)) for i in range(SCAN_POINTS)})
    return [lo + (hi - lo) * i / (SCAN_POINTS - 1) for i in range(SCAN_POINTS)]

