"""Call a formula with the named arguments of one op call, bound from the op's schema (as torch's flop_counter).

__torch_dispatch__ hands an op its arguments as a tuple and a dict; a formula is written against names
instead, `def conv(input, weight, bias=None, ..., groups=1, *, out, **_)`, so one formula serves every
overload and every op of a family whatever the position of an argument (`groups` is 7th in `conv2d`, 9th
in `convolution`). The names come from `op._schema.arguments`, computed once per OpOverload:
- schema defaults fill what the call left out (the dispatcher drops trailing defaults);
- `self` is passed as `input` (aten's name for the first tensor of most ops is `self`, a word Python code
  keeps for methods), unless the op also has an argument called `input`;
- `out` is the op's output (a schema argument named `out`, the `.out` overloads' destination, is the same
  tensor);
- a formula without `**kwargs` receives only the names it declares.
An op given by name (a string) or as a packet has no single schema: its arguments are passed by position.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

Caller = Callable[[tuple, dict, Any], Any]


def accepted_names(formula: Callable) -> frozenset[str] | None:
    """The keyword names `formula` accepts, or None when it takes `**kwargs` (or cannot be inspected)."""
    try:
        params = inspect.signature(formula).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY)


def schema_names(op: Any) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """(positional argument names, defaults by name) of an OpOverload's schema; None without a schema."""
    schema = getattr(op, "_schema", None)
    if schema is None:
        return None
    arguments = schema.arguments
    rename = {"self": "input"} if all(a.name != "input" for a in arguments) else {}
    names = tuple(rename.get(a.name, a.name) for a in arguments if not a.kwarg_only)
    defaults = {rename.get(a.name, a.name): a.default_value for a in arguments if a.has_default_value()}
    return names, defaults


def bind(op: Any, formula: Callable) -> Caller:
    """A `(args, kwargs, out) -> Cost` caller of `formula` for op calls of `op` (see the module docstring)."""
    accepts = accepted_names(formula)
    takes_out = accepts is None or "out" in accepts
    schema = schema_names(op)
    if schema is None:
        def positional(args: tuple, kwargs: dict, out: Any) -> Any:
            return formula(*args, **kwargs, out=out) if takes_out else formula(*args, **kwargs)

        caller = positional
    else:
        names, defaults = schema

        def named(args: tuple, kwargs: dict, out: Any) -> Any:
            bound = dict(defaults)
            bound.update(zip(names, args))
            if kwargs:
                bound.update(kwargs)
            bound["out"] = out
            if accepts is not None:
                bound = {k: v for k, v in bound.items() if k in accepts}
            return formula(**bound)

        caller = named
    caller.formula = formula  # what the caller calls, for listings and tests
    return caller
