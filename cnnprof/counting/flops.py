"""FLOPs: the op trace (cnnprof.counting.trace) summed per module, op, layer type and scope.

Mode "infer" counts one forward pass; mode "train" one training step (cnnprof.counting.train): the
forward in train() mode and autograd's backward, each record tagged with its phase (forward, grad_input,
grad_weight), so that every breakdown exists per phase (`FlopCount.part`).

MACs are counted internally; conventions are applied only when asked (`FlopCount.flops`, see
cnnprof.counting.conventions). fvcore is a second backend, a cross-check of the conv scope
(cnnprof.counting.fvcore).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import repeat
from typing import Any, Iterable, Mapping, Sequence

from cnnprof.counting.conventions import to_flops
from cnnprof.counting.group import in_stage_order, stage_of, totals
from cnnprof.counting.run import parse_shape, trace_model
from cnnprof.counting.source import as_source
from cnnprof.counting.trace import OpEvent, Trace
from cnnprof.counting.train import GRAD_INPUT, GRAD_WEIGHT, TrainTrace, train_trace
from cnnprof.counting.types import module_ancestors, module_depth, type_sort_key
from cnnprof.errors import CnnprofError, parameter
from cnnprof.inputs import InputSpec
from cnnprof.results import Printable

SCOPES = ("conv", "all")
BACKENDS = ("torch", "fvcore")
MODES = ("infer", "train")
FORWARD = "forward"
PHASES = (FORWARD, GRAD_INPUT, GRAD_WEIGHT)  # a training step's parts: forward, backward to inputs, to weights


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
    phase: str = FORWARD  # in a training step: forward, grad_input or grad_weight (PHASES)


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
    mode: str = "infer"  # infer: one forward pass; train: one training step (forward + backward)
    trainable: int | None = None  # train mode: parameters that get a gradient
    frozen: tuple[str, ...] = ()  # train mode: the patterns that froze parameters

    def part(self, *phases: str) -> "FlopCount":
        """The count of some phases of a training step only (PHASES), with every breakdown; part("forward") of a
        training step is its forward pass (in train() mode)."""
        unknown = [p for p in phases if p not in PHASES]
        if unknown:
            raise CnnprofError(f"unknown phase {unknown[0]!r}; choose among {', '.join(PHASES)}")
        return replace(self, records=tuple(r for r in self.records if r.phase in phases))

    @property
    def forward(self) -> "FlopCount":
        return self.part(FORWARD)

    @property
    def backward(self) -> "FlopCount":
        return self.part(GRAD_INPUT, GRAD_WEIGHT)

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
        """Activations (pycls): output elements of conv, linear and windowed pooling, whatever the scope, of the
        forward pass. None for the fvcore backend, which sees no pooling."""
        return None if self.backend == "fvcore" else sum(r.acts for r in self.records if r.phase == FORWARD)

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


def op_stats(events: Iterable[OpEvent], phase: str = FORWARD, calls: Iterable[int] | None = None) -> tuple[OpStat, ...]:
    """The priced events summed per (module, op, layer type, scope), in first-call order; `calls`: what each event
    adds to its calls (1 unless given: the second part of one backward call adds 0)."""
    pairs = zip(events, calls if calls is not None else repeat(1))
    sums = totals(((e, c) for e, c in pairs if e.scope is not None), lambda p: ((p[0].module, p[0].op, p[0].type,
                                                                                 p[0].scope),),
                  lambda p: (p[0].macs, p[0].ops, p[1], p[0].acts))
    return tuple(OpStat(*key, macs, ops, calls, acts=acts, phase=phase)
                 for key, (macs, ops, calls, acts) in sums.items())


def train_flop_count(trace: TrainTrace, scope: str = "conv") -> FlopCount:
    """The FLOP view of a training step: forward records, then the backward's, split by gradient."""
    records = op_stats(trace.forward.events)
    for kind in (GRAD_INPUT, GRAD_WEIGHT):
        chosen = [i for i, k in enumerate(trace.grads) if k == kind]
        records += op_stats([trace.backward[i] for i in chosen], kind, [int(i not in trace.second_parts) for i in chosen])
    uncounted: dict[str, int] = dict(trace.forward.uncounted)
    for op, calls in trace.uncounted:
        uncounted[op] = uncounted.get(op, 0) + calls
    return replace(flop_count(trace.forward, scope), records=records, uncounted=tuple(sorted(uncounted.items())),
                   mode="train", trainable=trace.trainable, frozen=trace.frozen)


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


def check_mode(mode: str, backend: str = "torch", frozen: Sequence[str] | None = None) -> None:
    """Raise for an unknown mode, a training step asked of fvcore, or frozen parameters outside a training step."""
    if mode not in MODES:
        raise CnnprofError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "train" and backend != "torch":
        raise CnnprofError(f"{parameter('mode', 'train')} is counted by the torch backend only (fvcore traces a "
                           f"forward pass); use {parameter('backend', 'torch')}")
    if frozen and mode != "train":
        raise CnnprofError(f"{parameter('frozen')} applies to a training step only; add {parameter('mode', 'train')}")


def count_flops(model: Any, input_shape: Sequence[int] | None = None, scope: str = "conv",
                backend: str = "torch", inputs: Any = None, *, formulas: Mapping | None = None,
                mode: str = "infer", frozen: Sequence[str] | None = None) -> FlopCount:
    """Count MACs of one forward pass of `model` (an nn.Module or a source, see cnnprof.counting.source).

    Inputs: `input_shape` (one tensor), or `inputs` (shape, tensor, tuple, dict; see cnnprof.inputs.normalize);
    neither: the model's declared input (config, `example_inputs()`, `default_input_shape`, timm's
    pretrained_cfg) or 1x3x224x224. Counted on meta tensors; a model that cannot run there (data-dependent
    ops such as nonzero, `.item()`) is run once for real on the CPU, and `method` says so. `formulas`:
    per-call overrides {op or nn.Module class: formula or (formula, scope)}; a module class is counted as a
    unit (cnnprof.counting.units). `mode="train"`: one training step, forward and backward (cnnprof.counting.train),
    `frozen` patterns of parameter names getting no gradient."""
    check_options(scope, backend, input_shape, inputs)
    check_mode(mode, backend, frozen)
    source = as_source(model)
    if input_shape is not None:
        inputs = (parse_shape(input_shape, ()),)
    if backend == "fvcore":
        from cnnprof.counting.fvcore import count_fvcore

        return count_fvcore(source, inputs)
    if mode == "train":
        return train_flop_count(train_trace(source, inputs, frozen=frozen or (), formulas=formulas), scope)
    return flop_count(trace_model(source, inputs, formulas=formulas, traffic=False), scope)
