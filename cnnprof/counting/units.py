"""Modules counted as a unit: a user's own nn.Module class priced by one formula, its inner ops not traced.

`register_formula(MyBlock, fn)` (or a `formulas={MyBlock: fn}` override per call) makes every instance of
MyBlock, and of its subclasses, one event of the op trace: `fn(module, *args, out=output, **kwargs) -> Cost`
is called with the module's forward inputs and output (meta tensors: shapes and dtypes). The default scope
of a module formula is "conv", so that a block's MACs stay in the papers' count; pass scope="all" for a
block that only does element-wise work.
"""
from __future__ import annotations

from typing import Any, Mapping

from cnnprof.counting.registry import Formula, Registered, SCOPES, resolve_formulas
from cnnprof.errors import parameter

_UNITS: dict[type, Registered] = {}


def is_module_class(value: Any) -> bool:
    """Whether `value` is an nn.Module subclass (a key of a module formula)."""
    if not isinstance(value, type):
        return False
    from torch import nn

    return issubclass(value, nn.Module)


def _entry(cls: type, fn: Any, scope: str | None) -> Registered:
    if not callable(fn):
        raise TypeError(f"the formula for {cls.__name__} must be callable, got {fn!r}")
    scope = "conv" if scope is None else scope
    if scope not in SCOPES:
        raise ValueError(f"{parameter('scope', repr(scope))} for {cls.__name__}: expected 'conv' or 'all'")
    return Registered(fn, scope)


def register_unit(cls: type, fn: Formula, scope: str | None = None, replace: bool = False) -> Formula:
    """Count every `cls` module as a unit priced by `fn` (see the module docstring)."""
    if cls in _UNITS and not replace:
        raise ValueError(f"a formula for {cls.__name__} is already registered ({_UNITS[cls].formula.__name__}); "
                         f"pass replace=True to replace it")
    _UNITS[cls] = _entry(cls, fn, scope)
    return fn


def unregister_unit(cls: type) -> Registered:
    if cls not in _UNITS:
        raise ValueError(f"no formula registered for {cls.__name__}")
    return _UNITS.pop(cls)


def registered_units() -> dict[type, Registered]:
    """Every module class counted as a unit -> (formula, scope)."""
    return dict(_UNITS)


def split_formulas(mapping: Mapping[Any, Any] | None) -> tuple[dict[str, Registered], dict[type, Registered]]:
    """Per-call overrides {op or module class: formula or (formula, scope)}, checked: (op overrides for the
    registry's lookup, module units merged over the registered ones)."""
    mapping = mapping or {}
    ops = resolve_formulas({k: v for k, v in mapping.items() if not is_module_class(k)})
    units = registered_units()
    for cls, value in mapping.items():
        if is_module_class(cls):
            if isinstance(value, tuple) and len(value) != 2:
                raise ValueError(f"the formula of {cls.__name__} must be a formula or (formula, scope), got "
                                 f"{value!r}")
            fn, scope = value if isinstance(value, tuple) else (value, None)
            units[cls] = _entry(cls, fn, scope)
    return ops, units
