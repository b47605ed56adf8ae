"""The registry of per-op cost formulas: which function prices which op, in which scope.

An op is keyed by its aten name ("convolution", "relu") or, outside aten, by "namespace::name"
("torchvision::nms", "mylib::myop"); every overload of an op shares its formula, and an in-place variant
(`relu_`) falls back to its op (`relu`). Users add their own with `register_formula` (checked: an aten name
must exist, a second formula for an op needs `replace=True`, the scope is "conv" or "all"), or pass
per-call overrides validated by `resolve_formulas`. A formula takes the op's arguments by name (see
cnnprof.counting.binding) plus `out`, the op's output, and returns a Cost. `lookup` gives the tracer a
`(args, kwargs, out) -> Cost` caller per OpOverload, built once and cached.
"""
from __future__ import annotations

import difflib
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

from cnnprof.counting.binding import Caller, bind
from cnnprof.errors import parameter


class Cost(NamedTuple):
    """What one op call costs: its layer type (e.g. cnnprof.counting.types.conv_type), MACs and other ops."""

    type: str
    macs: int
    ops: int


Formula = Callable[..., Cost]


class Registered(NamedTuple):
    """A formula and its scope: "conv" (convolutions and matrix products) or "all"."""

    formula: Formula
    scope: str


SCOPES = ("conv", "all")
_REGISTRY: dict[str, Registered] = {}
FORMULAS: Mapping[str, Registered] = MappingProxyType(_REGISTRY)  # read-only view: op key -> (formula, scope)
_CALLERS: dict[Any, tuple[Caller | None, str | None]] = {}  # op -> lookup's answer from the registry
_BOUND: dict[tuple[Any, Formula], Caller] = {}  # (op, formula) -> caller, for overrides


def op_name(op: Any) -> str:
    """The aten name of an op given as an OpOverload / OpOverloadPacket (torch.ops.aten.relu_.default) or a string."""
    if isinstance(op, str):
        return op
    packet = getattr(op, "overloadpacket", op)
    return getattr(packet, "__name__", str(op))


def op_key(op: Any) -> str:
    """The registry key of an op: its aten name, or "namespace::name" outside aten."""
    if isinstance(op, str):
        return op[6:] if op.startswith("aten::") else op
    packet = getattr(op, "overloadpacket", op)
    qualified = getattr(packet, "_qualified_op_name", None)
    if not isinstance(qualified, str):
        return op_name(op)
    return qualified[6:] if qualified.startswith("aten::") else qualified


def _aten_names() -> list[str]:
    import torch

    return sorted({n.split("::", 1)[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
                   if n.startswith("aten::")})


def _check_aten(name: str) -> None:
    """Raise ValueError, with close matches, when torch.ops.aten has no op `name`."""
    import torch

    if hasattr(torch.ops.aten, name):
        return
    close = difflib.get_close_matches(name, _aten_names(), n=5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown aten op {name!r}: torch.ops.aten has no such op{hint} (an op of another "
                     f"namespace is named 'namespace::name')")


def checked_key(op: Any) -> str:
    """The registry key of `op` (an OpOverloadPacket, OpOverload or name); an aten name must exist."""
    if not isinstance(op, str):
        if not isinstance(getattr(getattr(op, "overloadpacket", op), "_qualified_op_name", None), str):
            raise TypeError(f"expected an op such as torch.ops.aten.relu or a name such as 'relu' or "
                            f"'torchvision::nms', got {op!r}")
        return op_key(op)
    namespace, _, name = op.rpartition("::")
    if not name.isidentifier() or not (namespace.isidentifier() or not namespace):
        raise ValueError(f"bad op name {op!r}: expected an aten name such as 'relu' or 'namespace::name' "
                         f"such as 'torchvision::nms' (no overload name)")
    if namespace in ("", "aten"):
        _check_aten(name)
    return op_key(op)


def _entry(key: str, fn: Any, scope: str) -> Registered:
    """A checked (formula, scope) pair for op `key`."""
    if not callable(fn):
        raise TypeError(f"the formula for {key!r} must be callable, got {fn!r}")
    if scope not in SCOPES:
        raise ValueError(f"{parameter('scope', repr(scope))} for {key!r}: expected 'conv' or 'all'")
    return Registered(fn, scope)


def _store(key: str, entry: Registered, replace: bool) -> None:
    if key in _REGISTRY and not replace:
        raise ValueError(f"a formula for {key!r} is already registered ({_REGISTRY[key].formula.__name__}); "
                         f"pass replace=True to replace it")
    _REGISTRY[key] = entry
    _CALLERS.clear()


def _load_builtins() -> None:
    """cnnprof's own formulas register on import: before a user's, so that a duplicate is seen as one."""
    import cnnprof.counting.formulas  # noqa: F401


def register_formula(op: Any, fn: Formula | None = None, *, scope: str | None = None, replace: bool = False) -> Any:
    """Register `fn` as the cost formula of `op` (an op, or an nn.Module class counted as a unit, see
    cnnprof.counting.units); without `fn`, a decorator that does so. Scope: "all" for an op, "conv" for a
    module unless given."""

    def register(fn: Formula) -> Formula:
        from cnnprof.counting.units import is_module_class, register_unit

        if is_module_class(op):
            return register_unit(op, fn, scope, replace)
        _load_builtins()
        key = checked_key(op)
        _store(key, _entry(key, fn, "all" if scope is None else scope), replace)
        return fn

    return register if fn is None else register(fn)


def builtin(*names: str, scope: str = "all") -> Callable[[Formula], Formula]:
    """Decorator registering one of cnnprof's own formulas for aten ops `names` (not looked up in torch:
    names of newer torch versions may be absent, tests/test_registry.py checks the rest)."""

    def register(fn: Formula) -> Formula:
        for name in names:
            _store(name, _entry(name, fn, scope), replace=False)
        return fn

    return register


def unregister_formula(op: Any) -> Registered:
    """Remove the formula of `op` (an op, its name or a module class); returns what was registered."""
    from cnnprof.counting.units import is_module_class, unregister_unit

    if is_module_class(op):
        return unregister_unit(op)
    _load_builtins()
    key = op_key(op)
    if key not in _REGISTRY:
        raise ValueError(f"no formula registered for {key!r}")
    entry = _REGISTRY.pop(key)
    _CALLERS.clear()
    return entry


def formulas() -> dict[str, Registered]:
    """Every registered op key -> (formula, scope), sorted by key (a copy)."""
    _load_builtins()
    return dict(sorted(_REGISTRY.items()))


def resolve_formulas(mapping: Mapping[Any, Any] | None) -> dict[str, Registered]:
    """Validate per-call overrides {op: formula or (formula, scope)} as register_formula would; a bare
    formula keeps the scope of the op's registered formula ("all" for an op without one)."""
    _load_builtins()
    resolved: dict[str, Registered] = {}
    for op, value in (mapping or {}).items():
        key = checked_key(op)
        if key in resolved:
            raise ValueError(f"two formulas for {key!r} in one mapping")
        if isinstance(value, tuple) and len(value) != 2:
            raise ValueError(f"the override of {key!r} must be a formula or (formula, scope), got {value!r}")
        fn, scope = value if isinstance(value, tuple) else (value, None)
        default = _REGISTRY[key].scope if key in _REGISTRY else "all"
        resolved[key] = _entry(key, fn, default if scope is None else scope)
    return resolved


def _find(key: str, table: Mapping[str, Registered]) -> Registered | None:
    """The entry of `key`, or of its op for an in-place variant (`relu_` -> `relu`)."""
    entry = table.get(key)
    return entry if entry is not None else table.get(key.rstrip("_"))


def lookup(op: Any, overrides: Mapping[str, Registered] | None = None) -> tuple[Caller | None, str | None]:
    """(caller(args, kwargs, out) -> Cost, scope) of an op (OpOverload or aten name), or (None, None);
    `overrides` (from resolve_formulas) are consulted first."""
    if overrides:
        entry = _find(op_key(op), overrides)
        if entry is not None:
            caller = _BOUND.get((op, entry.formula))
            if caller is None:
                if len(_BOUND) > 4096:  # overrides made afresh per call (lambdas) must not pile up
                    _BOUND.clear()
                caller = _BOUND[op, entry.formula] = bind(op, entry.formula)
            return caller, entry.scope
    found = _CALLERS.get(op)
    if found is None:
        entry = _find(op_key(op), _REGISTRY)
        found = _CALLERS[op] = (bind(op, entry.formula), entry.scope) if entry else (None, None)
    return found
