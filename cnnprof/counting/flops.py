"""FLOPs: the op trace (cnnprof.counting.trace) summed per module, op, layer type and scope.

MACs are counted internally; conventions are applied only when asked (`FlopCount.flops`, see
cnnprof.counting.conventions). fvcore is a second backend, a cross-check of the conv scope
(cnnprof.counting.fvcore).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from cnnprof.counting.conventions import to_flops
from cnnprof.counting.group import in_stage_order, stage_of, totals
from cnnprof.counting.run import parse_shape, trace_model
from cnnprof.counting.source import as_source
from cnnprof.counting.trace import OpEvent, Trace
from cnnprof.counting.types import module_ancestors, module_depth, type_sort_key
from cnnprof.errors import CnnprofError, parameter
from cnnprof.inputs import InputSpec
from cnnprof.results import Printable

SCOPES = ("conv", "all")
BACKENDS = ("torch", "fvcore")


@dataclass(frozen=True)
class OpStat:
    """Cost of one op type inside one module (exclusive of its children), summed over calls."""

    module: str
    op: str
    type: str
    scope: str  # "conv" or "all"
    macs: int
    ops: int
    calls: int
    acts: int = 0  # output elements of conv / linear / windowed pooling (cnnprof.counting.acts)


@dataclass(frozen=True)
class Share:
    """One row of a breakdown: name, MACs, other ops, FLOPs in the result's convention-free form."""

    name: str
    macs: int
    ops: int
    calls: int = 0

    def flops(self, convention: str = "macc") -> int:
        return to_flops(self.macs, self.ops, convention)


@dataclass(frozen=True)
class FlopCount(Printable):
    """MACs of one forward pass, every op attributed to its module, op and layer type; prints as `cnnprof flops`."""

    model: str
    input_shape: tuple[int, ...]
    scope: str
    backend: str
    records: tuple[OpStat, ...]
    uncounted: tuple[tuple[str, int], ...]  # ops that ran but have no formula: (op, calls)
    module_names: tuple[str, ...]  # every module path, in module order
    inputs: tuple[InputSpec, ...] = ()  # every tensor input: shape, dtype, keyword name (None: positional)
    method: str = "meta"  # meta: meta tensors; cpu: one real forward pass on the CPU (data-dependent ops)
    # (module path, input shape, output shape) of each module's first call
    module_shapes: tuple[tuple[str, tuple[int, ...] | None, tuple[int, ...] | None], ...] = ()
    params: int | None = None  # parameters of the counted model (None where the backend does not say)

    def _in_scope(self) -> Iterable[OpStat]:
        return (r for r in self.records if self.scope == "all" or r.scope == "conv")

    @property
    def macs(self) -> int:
        """Multiply-accumulates in scope."""
        return sum(r.macs for r in self._in_scope())

    @property
    def other_ops(self) -> int:
        """Non-MAC elementary ops in scope (0 in the conv scope)."""
        return sum(r.ops for r in self._in_scope())

    def flops(self, convention: str = "macc") -> int:
        """FLOPs under a convention: macc (1 MAC = 1 FLOP) or nvidia (1 MAC = 2 FLOPs)."""
        return to_flops(self.macs, self.other_ops, convention)

    @property
    def acts(self) -> int | None:
        """Activations (pycls): output elements of conv, linear and windowed pooling, whatever the scope.
        None for the fvcore backend, which sees no pooling."""
        return None if self.backend == "fvcore" else sum(r.acts for r in self.records)

    def _group(self, keys) -> dict[str, Share]:
        sums = totals(self._in_scope(), keys, lambda r: (r.macs, r.ops, r.calls))
        return {k: Share(k or "(model)", *v) for k, v in sums.items()}

    def by_op(self) -> list[Share]:
        """Per aten op, largest first."""
        return sorted(self._group(lambda r: (r.op,)).values(), key=lambda s: -(s.macs + s.ops))

    def by_type(self) -> list[Share]:
        """Per layer type (conv KxK, depthwise, pointwise, grouped, linear, norm, SE, ...)."""
        return sorted(self._group(lambda r: (r.type,)).values(), key=lambda s: type_sort_key(s.name))

    def by_stage(self) -> list[Share]:
        """Per top-level child of the model (stem, stage1.., head), in model order."""
        return in_stage_order(self._group(lambda r: (stage_of(r.module),)), self.module_names)

    def by_module(self, depth: int | None = None) -> list[tuple[str, Share]]:
        """Inclusive totals of every module up to `depth` levels (None: all), in module order."""
        shares = self._group(lambda r: module_ancestors(r.module))
        return [(name, shares[name]) for name in self.module_names
                if name in shares and (depth is None or module_depth(name) <= depth)]


def op_stats(events: Iterable[OpEvent]) -> tuple[OpStat, ...]:
    """The priced events summed per (module, op, layer type, scope), in first-call order."""
    sums = totals((e for e in events if e.scope is not None), lambda e: ((e.module, e.op, e.type, e.scope),),
                  lambda e: (e.macs, e.ops, 1, e.acts))
    return tuple(OpStat(*key, macs, ops, calls, acts=acts) for key, (macs, ops, calls, acts) in sums.items())


def flop_count(trace: Trace, scope: str = "conv") -> FlopCount:
    """The FLOP view of an op trace."""
    return FlopCount(
        model=trace.label, input_shape=trace.input_shape, scope=scope, backend="torch",
        records=op_stats(trace.events), uncounted=trace.uncounted, module_names=trace.module_names,
        inputs=trace.inputs, method=trace.method, module_shapes=trace.module_shapes, params=trace.params,
    )


def check_options(scope: str, backend: str, input_shape: Any, inputs: Any) -> None:
    """Raise for an unknown scope or backend, both input forms given, or fvcore asked for the all scope."""
    if scope not in SCOPES:
        raise CnnprofError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if backend not in BACKENDS:
        raise CnnprofError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if input_shape is not None and inputs is not None:
        raise CnnprofError("give input_shape or inputs, not both")
    if backend == "fvcore" and scope != "conv":
        raise CnnprofError(f"the fvcore backend cross-checks the conv scope only; use {parameter('backend', 'torch')} "
                           f"for {parameter('scope', 'all')}")


def count_flops(model: Any, input_shape: Sequence[int] | None = None, scope: str = "conv",
                backend: str = "torch", inputs: Any = None, *, formulas: Mapping | None = None) -> FlopCount:
    """Count MACs of one forward pass of `model` (an nn.Module or a source, see cnnprof.counting.source).

    Inputs: `input_shape` (one tensor), or `inputs` (shape, tensor, tuple, dict; see cnnprof.inputs.normalize);
    neither: the model's declared input (config, `example_inputs()`, `default_input_shape`, timm's
    pretrained_cfg) or 1x3x224x224. Counted on meta tensors; a model that cannot run there (data-dependent
    ops such as nonzero, `.item()`) is run once for real on the CPU, and `method` says so. `formulas`:
    per-call overrides {op or nn.Module class: formula or (formula, scope)}; a module class is counted as a
    unit (cnnprof.counting.units)."""
    check_options(scope, backend, input_shape, inputs)
    source = as_source(model)
    if input_shape is not None:
        inputs = (parse_shape(input_shape, ()),)
    if backend == "fvcore":
        from cnnprof.counting.fvcore import count_fvcore

        return count_fvcore(source, inputs)
    return flop_count(trace_model(source, inputs, formulas=formulas, traffic=False), scope)
