"""Scaling sweeps: a grid over config knobs (MobileNet's width and resolution multipliers, Tables 6-7).

`--set k=v1,v2,...` gives one axis per knob; the grid is their product, in the order given.
"""
from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from cnnprof.design.metrics import Point, Settings, evaluate
from cnnprof.errors import CnnprofError


@dataclass(frozen=True)
class SweepResult:
    """Every grid point of one model, in grid order (the last knob varies fastest)."""

    model: str
    axes: tuple[tuple[str, tuple[Any, ...]], ...]  # knob -> values swept
    fixed: tuple[tuple[str, Any], ...]  # single-valued --set overrides applied to every point
    settings: Settings
    points: tuple[Point, ...]

    @property
    def knob_names(self) -> tuple[str, ...]:
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
            raise CnnprofError(f"--set {item!r}: expected KEY=V1[,V2,...], e.g. --set width_mult=1,0.75,0.5")
        parts = [t for t in text.split(",")]
        if any(not t.strip() for t in parts):
            raise CnnprofError(f"--set {item!r}: empty value in the list")
        values = [parse_override(f"{key}={t.strip()}")[1] for t in parts]
        key = key.strip()
        if key in axes or key in fixed:
            raise CnnprofError(f"--set {key}: given twice")
        if len(values) > 1:
            axes[key] = values
        else:
            fixed[key] = values[0]
    return axes, fixed


def check_knobs(spec: str, names: Sequence[str]) -> None:
    """Raise (exit 2, one line) for a knob the model does not have: not a config param or dotted path,
    or not a keyword of a module:callable factory."""
    from cnnprof.models.config import BUILDER_PARAMS, read_yaml
    from cnnprof.models.zoo import resolve_zoo_name, zoo_path

    names = list(names)
    if not names:
        return
    path = None
    if isinstance(spec, str) and spec.lower().endswith((".yaml", ".yml")):
        path = spec
    elif isinstance(spec, str) and ":" not in spec and resolve_zoo_name(spec):
        path = zoo_path(spec)
    if path is not None:
        raw = read_yaml(path)
        settable = {**BUILDER_PARAMS, **(raw.get("params") or {})}
        for name in names:
            if name not in settable and not ("." in name and _has_path(raw, name.split("."))):
                raise CnnprofError(f"{spec}: unknown knob {name!r}; settable: {', '.join(sorted(settable))}, "
                                   f"or a dotted path like stages.0.depth")
        return
    if isinstance(spec, str) and ":" in spec:
        from cnnprof.models.spec import _import_factory  # noqa: PLC0415 - the factory's keywords are the knobs

        factory = _import_factory(spec, {})
        cells = [c.cell_contents for c in factory.__closure__ or ()]
        target = next((c for c in cells if callable(c)), factory)
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return
        for name in names:
            if name not in sig.parameters:
                raise CnnprofError(f"{spec}: unknown knob {name!r}; the callable takes "
                                   f"{', '.join(sig.parameters) or 'no arguments'}")


def _has_path(node: Any, parts: list[str]) -> bool:
    for part in parts:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


def sweep(spec: str, axes: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any] | None = None,
          settings: Settings = Settings(), progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Evaluate every point of the grid; invalid points are kept with their error."""
    fixed = dict(fixed or {})
    for name, values in axes.items():
        if not values:
            raise CnnprofError(f"--set {name}: empty list of values")
    check_knobs(spec, [*axes, *fixed])
    names = list(axes)
    grid = list(itertools.product(*(axes[n] for n in names))) if names else [()]
    points = []
    label = spec
    for i, values in enumerate(grid):
        knobs = dict(zip(names, values))
        points.append(evaluate(spec, {**fixed, **knobs}, settings, knobs=knobs))
        if progress:
            progress(i + 1, len(grid))
    try:
        from cnnprof.models.spec import resolve

        label = resolve(spec, fixed).label
    except CnnprofError:
        pass
    return SweepResult(model=label, axes=tuple((n, tuple(axes[n])) for n in names),
                       fixed=tuple(fixed.items()), settings=settings, points=tuple(points))
