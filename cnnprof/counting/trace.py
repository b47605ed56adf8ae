"""One op trace: every aten op of one forward pass as an event, attributed to the module that ran it.

`Tracer` is a TorchDispatchMode: each op call becomes an `OpEvent` with its module path, op name, layer
type (decided once, here), formula scope, MACs and other ops (cnnprof.counting.formulas), acts (pycls) and
the elements it reads and writes. FLOPs (cnnprof.counting.flops), memory traffic (cnnprof.counting.traffic),
the roofline and the latency prediction (cnnprof.predict) are views over the same events; none runs the
model again. Running a model under a tracer, on meta tensors or for real, is cnnprof.counting.run.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping, NamedTuple

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnprof.counting.acts import op_acts
from cnnprof.counting.formulas import Cost, is_free, lookup, op_name
from cnnprof.counting.formulas.free import ALLOCATIONS
from cnnprof.counting.meta_fast import fast_meta
from cnnprof.counting.types import scoped_type, type_scopes
from cnnprof.inputs import InputSpec

# Ops that copy data (no formula, no FLOPs) but move bytes: they are events with the type COPY_TYPE.
COPY_OPS = frozenset(("cat", "stack", "clone", "contiguous", "copy", "_to_copy", "constant_pad_nd", "pad",
                      "channel_shuffle", "pixel_shuffle", "reflection_pad2d", "replication_pad2d"))
COPY_TYPE = "memory copy"
_IN_PLACE_COPIES = frozenset(("clone", "contiguous", "copy", "_to_copy"))

# A module counted as a unit: fn(module, *args, out=output, **kwargs) -> Cost, and the cost's scope.
ModuleFormula = Callable[..., Cost]


class OpEvent(NamedTuple):
    """One op call of a forward pass: what ran, where, its cost and the elements it moved (a NamedTuple: one is
    made per op, so it must be cheap to make; `_asdict()` gives its fields)."""

    module: str  # path of the innermost module running ("" for the model's own code)
    op: str  # aten op name, in-place suffix dropped (relu_ -> relu); a module counted as a unit: its class
    type: str  # layer type as the breakdowns show it: a declaring module's type (SE) over the op's own
    op_type: str  # the op's own type (conv 3x3, depthwise conv, activation, memory copy, ...): what a kernel is
    scope: str | None  # formula scope, "conv" or "all"; None for a copy (no FLOPs, only bytes)
    macs: int
    ops: int
    acts: int
    elements_read: int  # every tensor argument once
    elements_written: int  # the first output once
    shape: tuple[int, ...] = ()  # first output's shape
    kernel: tuple[int, ...] = ()  # conv / pool window
    groups: int = 1


def first_shape(value: Any) -> tuple[int, ...] | None:
    """Shape of the first tensor in a (nested) value, or None."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        found = first_shape(item)
        if found is not None:
            return found
    return None


def _elements(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (list, tuple)):
        return sum(_elements(v) for v in value)
    return 0


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) and out else out


_NOTHING_MOVED = (0, 0, (), (), 1)


def _moved(name: str, base: str, op_type: str, args: tuple, kwargs: dict, out: Any) -> tuple:
    """(elements read, elements written, output shape, kernel, groups) of one op call."""
    first = _first(out)
    is_tensor = isinstance(first, torch.Tensor)
    written = first.numel() if is_tensor else 0
    read = written if base in _IN_PLACE_COPIES and name.endswith("_") else (
        _elements(args) + _elements(tuple(kwargs.values())))  # copy_(dst, src): dst is only written
    return (read, written, tuple(first.shape) if is_tensor else (), *_kernel_groups(base, op_type, args, kwargs))


def _kernel_groups(name: str, op_type: str, args: tuple, kwargs: dict) -> tuple[tuple[int, ...], int]:
    """Window and groups of a conv or windowed pool (the latency model's lookup keys); () and 1 otherwise."""
    if (op_type.startswith("conv ") or op_type.endswith(" conv")) and isinstance(args[1], torch.Tensor):
        w = args[1]  # a quantized conv's packed weight is no tensor: no lookup keys for it
        groups = args[8] if len(args) > 8 else (args[6] if len(args) > 6 and not isinstance(args[6], bool)
                                                 else kwargs.get("groups", 1))
        return tuple(w.shape[2:]), int(groups)
    if "pool" in name and len(args) > 1 and not name.startswith(("adaptive", "_adaptive")):
        k = args[1]
        return (tuple(k) if isinstance(k, (list, tuple)) else (k,)), 1
    return (), 1


class ModuleTracker:
    """Keeps the path of the module whose forward is running (forward pre/post hooks), the first input and
    output shape of every module, how many module calls ran, and which modules are counted as units."""

    def __init__(self, model: nn.Module, units: Mapping[type, tuple[ModuleFormula, str]] | None = None):
        self.stack: list[str] = [""]
        self.shapes: dict[str, list] = {}  # module path -> [input shape, output shape] of its first call
        self.handles = []
        self.type_scopes = type_scopes(model)
        self.unit_depth = 0  # > 0 while a module counted as a unit runs: its ops are not recorded
        self.unit_events: list[tuple[str, nn.Module, tuple, dict, Any]] = []
        units = units or {}
        for name, module in model.named_modules():
            if name:
                self._hook(name, module, next((units[t] for t in type(module).__mro__ if t in units), None))

    def _hook(self, name: str, module: nn.Module, unit: tuple[ModuleFormula, str] | None) -> None:
        if unit is None:
            self.handles.append(module.register_forward_pre_hook(partial(self._enter, name)))
            self.handles.append(module.register_forward_hook(partial(self._exit, name), always_call=True))
            return
        self.handles.append(module.register_forward_pre_hook(partial(self._enter_unit, name), with_kwargs=True))
        self.handles.append(module.register_forward_hook(partial(self._exit_unit, name, unit), with_kwargs=True,
                                                         always_call=True))

    def _enter(self, name: str, module: nn.Module, args: tuple) -> None:
        self.stack.append(name)
        if name not in self.shapes:
            self.shapes[name] = [first_shape(args), None]

    def _exit(self, name: str, module: nn.Module, args: tuple, output: Any) -> None:
        if self.stack[-1] == name:
            self.stack.pop()
        if name in self.shapes and self.shapes[name][1] is None:
            self.shapes[name][1] = first_shape(output)

    def _enter_unit(self, name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._enter(name, module, args)
        self.unit_depth += 1

    def _exit_unit(self, name: str, unit: tuple[ModuleFormula, str], module: nn.Module, args: tuple, kwargs: dict,
                   output: Any) -> None:
        self.unit_depth -= 1
        if self.unit_depth == 0:
            self.unit_events.append((name, module, args, kwargs, output))
        self._exit(name, module, args, output)

    def shapes_table(self) -> tuple[tuple[str, tuple[int, ...] | None, tuple[int, ...] | None], ...]:
        return tuple((name, i, o) for name, (i, o) in self.shapes.items())

    @property
    def current(self) -> str:
        return self.stack[-1]

    def declared_type(self, path: str) -> str | None:
        """The type declared by a module around `path` (e.g. "SE": its ops count as type SE), or None."""
        return scoped_type(path, self.type_scopes)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class FormulaError(Exception):
    """An error inside cnnprof's own counting (a formula), not the user's model: stays an internal error."""


class Tracer(TorchDispatchMode):
    """Dispatch mode that turns every aten op into an OpEvent (see the module docstring)."""

    def __init__(self, tracker: ModuleTracker | None = None, formulas: Mapping | None = None, traffic: bool = True):
        super().__init__()
        self.tracker = tracker
        self.formulas = formulas  # per-call overrides of the registry (cnnprof.counting.formulas.lookup)
        self.traffic = traffic  # record elements moved, output shape, kernel and groups (the traffic view's facts)
        self.events: list[OpEvent] = []
        self.uncounted: dict[str, int] = defaultdict(int)  # ops that ran without a formula: calls
        self.free_calls = 0  # views and uncounted ops (not allocations): no traffic, but each one is dispatched

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Counting never runs under torch.compile; letting torch wrap __torch_dispatch__ in
        # dynamo.disable would import torch._dynamo (~2 s) on the first counted op.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        out = fast_meta(name, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if not (self.tracker and self.tracker.unit_depth):
            self.record(func, args, kwargs, out)
        return out

    def _price(self, func: Any, name: str, args: tuple, kwargs: dict, out: Any) -> tuple[Cost, str | None] | None:
        formula, scope = lookup(func, self.formulas) if self.formulas else lookup(func)
        if formula is None:
            if not is_free(name):
                self.uncounted[name] += 1
            return (Cost(COPY_TYPE, 0, 0), None) if name.rstrip("_") in COPY_OPS else None
        try:
            return formula(args, kwargs, out), scope
        except Exception as exc:  # noqa: BLE001 - must not be mistaken for the user's model failing
            raise FormulaError(name) from exc

    def record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> OpEvent | None:
        """Price one op call (`func`: an OpOverload, or an aten name) and keep it as an event."""
        name = op_name(func)
        priced = self._price(func, name, args, kwargs, out)
        if priced is None:
            self.free_calls += name not in ALLOCATIONS
            return None
        cost, scope = priced
        base = name.rstrip("_")
        module = self.tracker.current if self.tracker else ""
        layer_type = (self.tracker.declared_type(module) if self.tracker else None) or cost.type
        event = OpEvent(module, base, layer_type, cost.type, scope, cost.macs, cost.ops, op_acts(name, cost.type, out),
                        *(_moved(name, base, cost.type, args, kwargs, out) if self.traffic else _NOTHING_MOVED))
        self.events.append(event)
        return event

    def add_units(self, units: Mapping[type, tuple[ModuleFormula, str]]) -> None:
        """Events for the modules counted as units (their formula called on their inputs and output)."""
        for path, module, args, kwargs, out in self.tracker.unit_events:
            formula, scope = next(units[t] for t in type(module).__mro__ if t in units)
            try:
                cost = formula(module, *args, out=out, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the user's formula: theirs to report
                raise FormulaError(type(module).__name__) from exc
            first = _first(out)
            self.events.append(OpEvent(
                module=path, op=type(module).__name__, type=cost.type, op_type=cost.type, scope=scope,
                macs=int(cost.macs), ops=int(cost.ops), acts=0, elements_read=_elements(args),
                elements_written=first.numel() if isinstance(first, torch.Tensor) else 0,
                shape=tuple(first.shape) if isinstance(first, torch.Tensor) else ()))


@dataclass(frozen=True)
class Trace:
    """Every op event of one forward pass of one model, and the facts of the run."""

    label: str
    events: tuple[OpEvent, ...]
    uncounted: tuple[tuple[str, int], ...]  # ops that ran without a formula: (op, calls)
    module_names: tuple[str, ...]  # every module path, in module order
    module_shapes: tuple[tuple[str, tuple[int, ...] | None, tuple[int, ...] | None], ...]
    inputs: tuple[InputSpec, ...]  # every tensor input: shape, dtype, keyword name (None: positional)
    method: str  # meta: meta tensors; cpu: one real forward pass on the CPU (data-dependent ops)
    modules_called: int  # module forward calls (the Python overhead the latency model charges)
    free_calls: int  # views and uncounted ops, not allocations (dispatched, but no traffic)
    params: int = 0  # parameters of the traced module, each counted once
    traffic: bool = True  # whether the events record what each op moved (see Tracer)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the first input (the one the tables show)."""
        return self.inputs[0].shape if self.inputs else ()
