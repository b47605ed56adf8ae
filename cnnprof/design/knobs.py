"""Which knobs a model spec has: a config's params and dotted paths, or the keywords of a module:callable.

sweep and match check every knob up front, so a typo is one error line (exit 2), not a grid of failed points.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

from cnnprof.errors import CnnprofError


def check_knobs(spec: str, names: Sequence[str]) -> None:
    """Raise (exit 2, one line) for a knob the model does not have: not a config param or dotted path,
    or not a keyword of a module:callable factory."""
    names = list(names)
    if not names or not isinstance(spec, str):
        return
    path = _config_path(spec)
    if path is not None:
        _check_config_knobs(spec, path, names)
    elif ":" in spec:
        _check_keywords(spec, names)


def _config_path(spec: str) -> Any:
    """The YAML file behind a config or zoo spec, else None (a module:callable, or an unknown name)."""
    from cnnprof.models.zoo import resolve_zoo_name, zoo_path

    if spec.lower().endswith((".yaml", ".yml")):
        return spec
    if ":" not in spec and resolve_zoo_name(spec):
        return zoo_path(spec)
    return None


def _check_config_knobs(spec: str, path: Any, names: list[str]) -> None:
    from cnnprof.models.config import BUILDER_PARAMS, read_yaml

    raw = read_yaml(path)
    settable = {**BUILDER_PARAMS, **(raw.get("params") or {})}
    for name in names:
        if name not in settable and not ("." in name and has_path(raw, name.split("."))):
            raise CnnprofError(f"{spec}: unknown knob {name!r}; settable: {', '.join(sorted(settable))}, "
                               f"or a dotted path like stages.0.depth")


def _check_keywords(spec: str, names: list[str]) -> None:
    """The knobs of a module:callable are its keywords (any name when it takes **kwargs or has no signature)."""
    target = user_callable(spec)
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


def user_callable(spec: str) -> Callable[..., Any]:
    """The callable a module:callable or file.py:callable spec names, imported (and checked) as resolve does."""
    from cnnprof.models.spec import resolve

    return resolve(spec).target


def has_path(node: Any, parts: list[str]) -> bool:
    """Whether a dotted path (split into parts) names an existing value of a raw YAML tree."""
    for part in parts:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True
