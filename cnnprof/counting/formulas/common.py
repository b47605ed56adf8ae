"""Shape helpers and the per-element formula factory shared by the formula families."""
from __future__ import annotations

from typing import Any

from cnnprof.counting.registry import Cost, Formula


def numel(t: Any) -> int:
    """Elements of a tensor; 1 for anything else (a scalar)."""
    return t.numel() if hasattr(t, "numel") else 1


def first(out: Any) -> Any:
    """The first output of an op that returns several (values of `max.dim`, output of `native_batch_norm`)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def per_element(name: str, layer_type: str, *, macs: int = 0, ops: int = 0, of: str = "output") -> Formula:
    """A formula costing `macs` MACs and `ops` other ops per element of the op's (first) output or of its
    `input` (`of`), of layer type `layer_type` (as fvcore's elementwise_flop_counter)."""
    if of not in ("output", "input"):
        raise ValueError(f"of={of!r}: expected 'output' or 'input'")

    def formula(input: Any = None, *_: Any, out: Any, **__: Any) -> Cost:
        n = numel(first(out)) if of == "output" else numel(input)
        return Cost(layer_type, macs * n, ops * n)

    formula.__name__ = formula.__qualname__ = name
    formula.__doc__ = f"{layer_type}: {macs} MACs + {ops} ops per {of} element."
    return formula
