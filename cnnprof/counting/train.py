"""Training FLOPs, counted: one forward pass in training mode, then autograd's backward, traced on meta tensors.

The model runs in train() mode through meta stand-ins of its weights (never the user's tensors: their
values, `.grad` and `requires_grad` flags stay as they are; a model that cannot run on meta runs once for real
on the CPU, through new leaves sharing its parameters' memory and copies of its buffers); a stand-in requires a gradient when its parameter
does and no `frozen` pattern names it. The seed gradient is ones for every floating output (the gradient of a
loss that sums the outputs; the loss itself is not counted). Autograd records the backward ops and the same
tracer prices each with the formula registry (cnnprof.counting.formulas.backward).

Attribution: every autograd node created during the forward pass is mapped to the module running at the
time (autograd's sequence numbers); each backward op runs inside a node (`torch._C._current_autograd_node`),
so it counts for the module whose forward op created that node, and a parameter's gradient accumulation for
the parameter's module. Split: an op that computes its input's and its parameters' gradients together
(`convolution_backward`, norm backward) is split by its `output_mask` (SPLITS); any other backward op is
weight-gradient work when it runs in a node whose every edge leads to parameters (a weight's transpose, view
or standardisation) or, inside one node, when everything it writes goes only to that node's parameter
gradients (a linear layer's `grad_output^T @ x` and its bias's sum); the rest is input-gradient work, what
carries the gradient on to earlier layers (in an attention block: every matmul, softmax and scaling of the
backward, though only the projections' weights are trained).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from cnnprof.counting.binding import bind
from cnnprof.counting.formulas.backward import SPLITS, TRAIN_FORMULAS
from cnnprof.counting.meta_fast import cheap_checks, fast_meta
from cnnprof.counting.registry import op_key, resolve_formulas
from cnnprof.counting.run import (_check_fits, _meta_failure, _real_model, dense_attention, forward_error,
                                  raise_internal)
from cnnprof.counting.source import as_source
from cnnprof.counting.state import check_initialised, untouched
from cnnprof.counting.trace import FormulaError, ModuleTracker, OpEvent, Trace, Tracer, first_shape
from cnnprof.errors import CnnprofError, parameter
from cnnprof.inputs import as_specs, make_inputs

GRAD_INPUT, GRAD_WEIGHT = "grad_input", "grad_weight"


@dataclass(frozen=True)
class TrainTrace:
    """The forward trace of one training step, its backward events and which gradient each one computes."""

    forward: Trace
    backward: tuple[OpEvent, ...]
    grads: tuple[str, ...]  # per backward event: GRAD_INPUT or GRAD_WEIGHT
    uncounted: tuple[tuple[str, int], ...]  # backward ops that ran without a formula: (op, calls)
    trainable: int  # parameters that got a gradient (each counted once)
    frozen: tuple[str, ...] = ()  # the patterns that froze parameters
    second_parts: frozenset[int] = frozenset()  # backward events that are the second part of a split op's call


_SAME_AS_GRAD = frozenset(("threshold_backward", "hardtanh_backward", "hardswish_backward", "hardsigmoid_backward",
                           "sigmoid_backward", "silu_backward", "gelu_backward"))
# backward op -> positions of (input, weight, output_mask) in its arguments
_GRAD_TRIPLES = {"convolution_backward": (1, 2, 10), "native_batch_norm_backward": (1, 2, 9),
                 "native_layer_norm_backward": (1, 5, 7)}


def _empty_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def fast_backward_meta(name: str, args: tuple) -> Any:
    """Outputs of common backward ops on meta tensors from shapes alone (torch's meta kernels for them are Python
    decompositions whose first call imports torch._dynamo, seconds), or None to let torch decide."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or not all(t.is_meta and t.dtype == tensors[0].dtype for t in tensors):
        return None
    if name in _SAME_AS_GRAD and args[0].shape == args[1].shape:
        return _empty_like(args[0])
    if name not in _GRAD_TRIPLES:
        return None
    i, w, m = _GRAD_TRIPLES[name]
    x, weight, mask = args[i], args[w], args[m]
    channels = (x.shape[1],) if name != "native_layer_norm_backward" else tuple(args[2])
    if name == "convolution_backward":
        bias = torch.empty(tuple(args[3]), dtype=x.dtype, device="meta") if mask[2] and args[3] is not None else None
        return (_empty_like(x) if mask[0] else None, _empty_like(weight) if mask[1] else None, bias)
    param = (lambda: _empty_like(weight)) if weight is not None else (
        lambda: torch.empty(channels, dtype=x.dtype, device="meta"))
    return (_empty_like(x) if mask[0] else None, param() if mask[1] else None, param() if mask[2] else None)


def _storages(value: Any, found: set[int]) -> set[int]:
    """Identities of the storages of every tensor in a (nested) value (views share their base's)."""
    if isinstance(value, torch.Tensor):
        found.add(value.untyped_storage()._cdata)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _storages(item, found)
    return found


class TrainTracer(Tracer):
    """A Tracer that maps the forward's autograd nodes to modules, then prices the backward ops (module docstring)."""

    def __init__(self, tracker: ModuleTracker, formulas: Mapping | None, param_modules: Mapping[int, str]):
        super().__init__(tracker, formulas, traffic=False)
        self.param_modules = param_modules  # id(stand-in parameter) -> path of its module
        self.node_modules: dict[int, str] = {}  # autograd sequence number -> module running when it was made
        self.next_node = torch._C._autograd._get_sequence_nr()
        self.in_backward = False
        self.forward_events: list[OpEvent] = []
        self.forward_uncounted: dict[str, int] = {}
        self.fixed: list[str | None] = []  # per backward event: its gradient kind when its node or op decided it
        self.flows: list[tuple[Any, set[int], set[int]]] = []  # per backward event: (node, storages read, written)
        self.second_parts: set[int] = set()  # events that continue the call of the event before them
        self.sinks: set[int] = set()  # storages read by parameter-only nodes: parameter gradients
        self.weight_nodes: dict[int, bool] = {}  # id(node) -> whether every edge of it leads to parameters
        self.last_module = ""

    def start_backward(self) -> None:
        self.forward_events, self.events = self.events, []
        self.forward_uncounted, self.uncounted = dict(self.uncounted), defaultdict(int)
        self.in_backward = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.in_backward:
            out = super().__torch_dispatch__(func, types, args, kwargs)
            now = torch._C._autograd._get_sequence_nr()
            for number in range(self.next_node, now):  # nodes made by this op (before its dispatch)
                self.node_modules[number] = self.tracker.current
            self.next_node = max(self.next_node, now)
            return out
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        out = None if kwargs else fast_backward_meta(name, args)
        out = fast_meta(name, args, kwargs) if out is None else out
        if out is None:
            out = func(*args, **kwargs)
        self._backward_op(func, args, kwargs, out)
        return out

    def _module_of(self, node: Any) -> str:
        if node is None:  # the engine adding two gradients of one tensor: the op just before
            return self.last_module
        variable = getattr(node, "variable", None)
        if variable is not None:  # AccumulateGrad: a parameter's gradient
            return self.param_modules.get(id(variable), "")
        return self.node_modules.get(node._sequence_nr(), "")

    def _weight_node(self, node: Any, depth: int = 0) -> bool:
        """Whether every input of `node` comes from trainable parameters only (a short chain of nodes at most)."""
        found = self.weight_nodes.get(id(node))
        if found is None:
            if hasattr(node, "variable"):
                found = id(node.variable) in self.param_modules
            else:
                edges = [n for n, _ in node.next_functions]  # None: an input that needs no gradient (an activation)
                found = bool(edges) and depth < 16 and all(n is not None and self._weight_node(n, depth + 1)
                                                           for n in edges)
            self.weight_nodes[id(node)] = found
        return found

    def _backward_op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        node = torch._C._current_autograd_node()
        module = self.last_module = self._module_of(node)
        in_weight_node = node is not None and self._weight_node(node)
        if in_weight_node:
            _storages(args, self.sinks)
        split = SPLITS.get(op_key(func))
        if split is not None and not (self.formulas and op_key(func) in self.formulas):
            self._split(func, split, module, args, kwargs, out)
            return
        self.tracker.stack.append(module)
        try:
            event = self.record(func, args, kwargs, out)
        finally:
            self.tracker.stack.pop()
        if event is not None:
            self.fixed.append(GRAD_WEIGHT if in_weight_node else None)
            self.flows.append((None if node is None else id(node), _storages((args, tuple(kwargs.values())), set()),
                               _storages(out, set())))

    def _split(self, func: Any, split: Any, module: str, args: tuple, kwargs: dict, out: Any) -> None:
        """Two events for one op that computes both kinds of gradient (SPLITS)."""
        try:
            parts = bind(func, split)(args, kwargs, out)
        except Exception as exc:  # noqa: BLE001 - cnnprof's own formula
            raise FormulaError(op_key(func)) from exc
        base, declared = op_key(func), self.tracker.declared_type(module)
        reads, node = _storages((args, tuple(kwargs.values())), set()), torch._C._current_autograd_node()
        scope, first = ("conv" if base == "convolution_backward" else "all"), len(self.events)
        for kind, cost in zip((GRAD_INPUT, GRAD_WEIGHT), parts):
            if cost.macs or cost.ops:
                if len(self.events) > first:  # one call, two events: the call is counted once
                    self.second_parts.add(len(self.events))
                self.events.append(OpEvent(module, base, declared or cost.type, cost.type, scope, int(cost.macs),
                                           int(cost.ops), 0, 0, 0))
                self.fixed.append(kind)
                self.flows.append((id(node), reads, set()))

    def grad_kinds(self) -> tuple[str, ...]:
        """Per backward event, which gradient it computes (see the module docstring), found backwards: a storage
        goes only to parameter gradients when a parameter-only node reads it, or when within one node every op
        that reads it is weight-gradient work (the engine's sums of two gradients, outside any node, pass it on)."""
        weight_only: dict[int, set] = {}  # storage -> nodes whose weight-gradient ops read it
        other: set[int] = set()  # storages read by input-gradient work
        kinds: list[str] = [GRAD_INPUT] * len(self.events)
        for i in reversed(range(len(self.events))):
            node, reads, writes = self.flows[i]
            kind = self.fixed[i] or (GRAD_WEIGHT if writes and all(
                w not in other and (w in self.sinks or node in weight_only.get(w, ())) for w in writes) else GRAD_INPUT)
            kinds[i] = kind
            for r in reads:
                if kind == GRAD_INPUT:
                    other.add(r)
                elif node is None:
                    self.sinks.add(r)
                else:
                    weight_only.setdefault(r, set()).add(node)
        return tuple(kinds)


def is_frozen(name: str, patterns: Sequence[str]) -> bool:
    """Whether parameter `name` is named by a pattern: a glob (fnmatch) of parameter names or a module path."""
    return any(fnmatchcase(name, p) or name.startswith(p + ".") for p in patterns)


def check_frozen(label: str, net: nn.Module, patterns: Sequence[str]) -> None:
    """Refuse a pattern that names no parameter (a typo would silently freeze nothing)."""
    names = [n for n, _ in net.named_parameters(remove_duplicate=False)]
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise CnnprofError(f"{parameter('frozen')}: expected parameter name patterns, got {p!r}")
        if not any(is_frozen(n, (p,)) for n in names):
            example = f" (its parameters are named like {', '.join(names[:2])})" if names else ""
            raise CnnprofError(f"{parameter('frozen', p)} names no parameter of {label}{example}")


def _stand_in(t: torch.Tensor, on_meta: bool) -> torch.Tensor:
    """A meta tensor like `t`; for a real run, a parameter's own memory under a new leaf (`detach`: not copied, its
    `.grad` not the user's) and a copy of a buffer (training updates batch norm's running statistics in place)."""
    if on_meta:
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    return t.detach() if isinstance(t, nn.Parameter) else t.clone()


def _train_stand_ins(net: nn.Module, frozen: Sequence[str],
                     on_meta: bool = True) -> tuple[dict[str, torch.Tensor], dict[int, str], int]:
    """(stand-ins of every parameter and buffer, stand-in id -> module path, trainable elements); a stand-in
    requires a gradient when its parameter does, is floating point and is not frozen."""
    made: dict[int, torch.Tensor] = {}
    frozen_ids = {id(p) for n, p in net.named_parameters(remove_duplicate=False) if is_frozen(n, frozen)}
    stand_ins, owners = {}, {}
    for module_name, module in net.named_modules(remove_duplicate=False):
        for short, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if id(t) not in made:
                made[id(t)] = s = _stand_in(t, on_meta)
                if isinstance(t, nn.Parameter) and t.requires_grad and t.is_floating_point() and id(t) not in frozen_ids:
                    s.requires_grad_(True)
                    owners[id(s)] = module_name
            stand_ins[f"{module_name}.{short}" if module_name else short] = made[id(t)]
    trainable = sum(s.numel() for s in made.values() if s.requires_grad)
    return stand_ins, owners, trainable


def _roots(out: Any) -> list[torch.Tensor]:
    """Every output tensor a gradient flows back from."""
    if isinstance(out, torch.Tensor):
        return [out] if out.requires_grad and out.is_floating_point() else []
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    return [t for item in items for t in _roots(item)]


def _step(net: nn.Module, args: tuple, kwargs: dict, frozen: Sequence[str], units: Mapping | None,
          formulas: Mapping | None, on_meta: bool = True) -> tuple[TrainTracer, ModuleTracker, int]:
    """One training step of `net` (on meta tensors, or real ones) under a TrainTracer: (tracer, module tracker,
    trainable elements)."""
    from torch.func import functional_call

    with untouched(net):
        stand_ins, owners, trainable = _train_stand_ins(net, frozen, on_meta)
        tracker = ModuleTracker(net, units)
        tracer = TrainTracer(tracker, formulas, owners)
        net.train()
        try:
            with torch.enable_grad(), cheap_checks(), dense_attention(), tracer:
                out = functional_call(net, stand_ins, args, kwargs, tie_weights=True, strict=False)
                tracker.shapes[""] = [first_shape((args, kwargs)), first_shape(out)]
                if units:
                    tracer.add_units(units)
                tracer.start_backward()
                roots = _roots(out)
                if roots:
                    torch.autograd.backward(roots, [torch.ones_like(r) for r in roots])
        except FormulaError as bug:
            raise_internal(bug)
        finally:
            tracker.remove()
    return tracer, tracker, trainable


def _real_step(label: str, net: nn.Module, inputs: tuple[tuple, dict], specs: Any,
               options: tuple) -> tuple[TrainTracer, ModuleTracker, int]:
    """One training step for real on the CPU, for a model that cannot run on meta (data-dependent ops)."""
    try:
        return _step(net, *make_inputs(*inputs, real=True), *options, on_meta=False)
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "_cnnprof_internal", False):
            raise
        raise forward_error(label, specs, exc) from None


def train_trace(model: Any, inputs: Any = None, *, frozen: Iterable[str] = (),
                formulas: Mapping | None = None) -> TrainTrace:
    """The op trace of one training step of `model` (an nn.Module or a source): forward in train() mode, a seed
    gradient of ones on every floating output, autograd's backward; on meta tensors, or once for real on the CPU
    for a model that cannot run there (`forward.method` says which). `frozen`: patterns of
    parameter names (globs, or module paths) that get no gradient, besides those with requires_grad=False."""
    from cnnprof.counting.units import split_formulas

    frozen = tuple(frozen)
    overrides, units = split_formulas(formulas)
    overrides = {**resolve_formulas(TRAIN_FORMULAS), **overrides}
    source = as_source(model)
    net = source.module if source.module is not None else source.build("meta")
    check_initialised(source.label, net)
    check_frozen(source.label, net, frozen)
    args, kwargs = source.inputs(net, inputs)
    specs = as_specs(args, kwargs)
    options = (frozen, units or None, overrides or None)
    try:
        tracer, tracker, trainable = _step(net, *make_inputs(args, kwargs), *options)
        method = "meta"
    except Exception as exc:  # noqa: BLE001 - the user's forward: theirs to report, or a reason to run for real
        if getattr(exc, "_cnnprof_internal", False):
            raise
        if not _meta_failure(exc):
            raise forward_error(source.label, specs, exc) from None
        _check_fits(source.label, net, specs, exc)
        net = _real_model(source, net, exc)
        (tracer, tracker, trainable), method = _real_step(source.label, net, (args, kwargs), specs, options), "cpu"
    forward = Trace(label=source.label, events=tuple(tracer.forward_events),
                    uncounted=tuple(sorted(tracer.forward_uncounted.items())),
                    module_names=tuple(name for name, _ in net.named_modules()), module_shapes=tracker.shapes_table(),
                    inputs=specs, method=method, modules_called=0, free_calls=0,
                    params=sum(p.numel() for p in net.parameters()), traffic=False)
    return TrainTrace(forward, tuple(tracer.events), tracer.grad_kinds(), tuple(sorted(tracer.uncounted.items())),
                      trainable, frozen, frozenset(tracer.second_parts))
