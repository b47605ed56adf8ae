"""Scaling sweeps: a grid over config knobs (MobileNet's width and resolution multipliers, Tables 6-7).

`--set k=v1,v2,...` gives one axis per knob; the grid is their product, in the order given.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from cnnprof.design.knobs import check_knobs
from cnnprof.design.metrics import Point, Settings, evaluate
from cnnprof.errors import CnnprofError, parameter
from cnnprof.results import Printable


@dataclass(frozen=True)
class SweepResult(Printable):
    """Every grid point of one model, in grid order (the last knob varies fastest)."""

    model: str
    axes: tuple[tuple[str, tuple[Any, ...]], ...]  # knob -> values swept
    fixed: tuple[tuple[str, Any], ...]  # single-valued --set overrides applied to every point
    settings: Settings
    points: tuple[Point, ...]
    complete: bool = True  # False when `stop` ended the sweep early: `points` are the ones finished

    @property
    def knob_names(self) -> tuple[str, ...]:
        """The swept knobs, in grid order."""
        return tuple(k for k, _ in self.axes)


def parse_axes(items: Sequence[str] | None) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """['width_mult=1,0.75', 'groups=32'] -> ({'width_mult': [1, 0.75]}, {'groups': 32}).

    Each value is YAML-typed like --set (0.75 a float, true a bool); a list of one value is an override."""
    from cnnprof.models.config import parse_override

    axes: dict[str, list[Any]] = {}
    fixed: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise CnnprofError(f"{parameter('overrides', repr(item))}: expected KEY=V1[,V2,...], e.g. "
                               f"{parameter('overrides', 'width_mult=1,0.75,0.5')}")
        parts = [t for t in text.split(",")]
        if any(not t.strip() for t in parts):
            raise CnnprofError(f"{parameter('overrides', repr(item))}: empty value in the list")
        values = [parse_override(f"{key}={t.strip()}")[1] for t in parts]
        key = key.strip()
        if key in axes or key in fixed:
            raise CnnprofError(f"{parameter('overrides', key)}: given twice")
        if len(values) > 1:
            axes[key] = values
        else:
            fixed[key] = values[0]
    return axes, fixed


@dataclass(frozen=True)
class Watch:
    """How a caller follows a long design run (sweep, match): `on_part` sees each finished unit (a point, a
    match row) as a result of that unit alone, to stream it; `on_first(units, seconds)` is called once, after
    the first unit, with how many there are in all and how long the first took (to estimate the run and
    refuse one too long by raising); `stop()` is polled between units (and evaluations), and when it returns
    true the run ends with the units finished (complete=False)."""

    on_part: Callable[[Any], None] | None = None
    on_first: Callable[[int, float], None] | None = None
    stop: Callable[[], bool] | None = None

    def stopped(self) -> bool:
        return self.stop is not None and self.stop()


def sweep(spec: str, axes: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any] | None = None,
          settings: Settings = Settings(), progress: Callable[[int, int], None] | None = None,
          watch: Watch = Watch()) -> SweepResult:
    """Evaluate every point of the grid; invalid points are kept with their error (see Watch for streaming,
    estimating and stopping)."""
    fixed = dict(fixed or {})
    for name, values in axes.items():
        if not values:
            raise CnnprofError(f"{parameter('axes', name)}: empty list of values")
    check_knobs(spec, [*axes, *fixed])
    cells = grid(axes)
    result = SweepResult(model=label(spec, fixed), axes=tuple((n, tuple(v)) for n, v in axes.items()),
                         fixed=tuple(fixed.items()), settings=settings, points=())
    points = []
    for i, knobs in enumerate(cells):
        if watch.stopped():
            return replace(result, points=tuple(points), complete=False)
        start = time.perf_counter()
        points.append(evaluate(spec, {**fixed, **knobs}, settings, knobs=knobs))
        if i == 0 and watch.on_first:
            watch.on_first(len(cells), time.perf_counter() - start)
        if watch.on_part:
            watch.on_part(replace(result, points=(points[-1],)))
        if progress:
            progress(i + 1, len(cells))
    return replace(result, points=tuple(points))


def grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, the last axis varying fastest ([{}] for no axes)."""
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


def label(spec: Any, fixed: Mapping[str, Any]) -> str:
    """The model's display name with the fixed overrides (the spec itself when it does not resolve)."""
    from cnnprof.models.spec import resolve

    try:
        return resolve(spec, fixed).label
    except CnnprofError:
        return spec
