"""FLOP counting: dispatch-level (TorchDispatchMode on the meta device) or fvcore as a cross-check.

MACs are counted internally; conventions are applied only when asked (`FlopCount.flops`, see
cnnprof.counting.conventions).
"""
from __future__ import annotations

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnprof.counting.acts import op_acts
from cnnprof.counting.conventions import to_flops
from cnnprof.counting.formulas import Cost, is_free, lookup, op_name
from cnnprof.counting.meta_fast import cheap_checks, fast_meta
from cnnprof.counting.source import as_source
from cnnprof.counting.types import module_ancestors, module_depth, scoped_type, type_scopes, type_sort_key
from cnnprof.errors import CnnprofError, InputShapeError, first_line
from cnnprof.inputs import InputSpec, as_specs, check_shape, describe, materialize

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
class FlopCount:
    """MACs of one forward pass, every op attributed to its module, op and layer type."""

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

    def _totals(self, keys) -> dict[str, list[int]]:
        """[MACs, ops, calls] per key; `keys(record)` names every group a record belongs to."""
        acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for r in self._in_scope():
            for k in keys(r):
                a = acc[k]
                a[0] += r.macs
                a[1] += r.ops
                a[2] += r.calls
        return acc

    def _group(self, key) -> list[Share]:
        return [Share(k, *v) for k, v in self._totals(lambda r: (key(r),)).items()]

    def by_op(self) -> list[Share]:
        """Per aten op, largest first."""
        return sorted(self._group(lambda r: r.op), key=lambda s: -(s.macs + s.ops))

    def by_type(self) -> list[Share]:
        """Per layer type (conv KxK, depthwise, pointwise, grouped, linear, norm, SE, ...)."""
        return sorted(self._group(lambda r: r.type), key=lambda s: type_sort_key(s.name))

    def by_stage(self) -> list[Share]:
        """Per top-level child of the model (stem, stage1.., head), in model order."""
        shares = {s.name: s for s in self._group(lambda r: r.module.split(".")[0] or "(root)")}
        order = [n for n in self.module_names if n and "." not in n] + ["(root)"]
        return [shares[n] for n in order if n in shares]

    def by_module(self, depth: int | None = None) -> list[tuple[str, Share]]:
        """Inclusive totals of every module up to `depth` levels (None: all), in module order."""
        acc = self._totals(lambda r: module_ancestors(r.module))
        return [(name, Share(name or "(model)", *acc[name])) for name in self.module_names
                if name in acc and (depth is None or module_depth(name) <= depth)]


def _first_shape(value: Any) -> tuple[int, ...] | None:
    """Shape of the first tensor in a (nested) value, or None."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        found = _first_shape(item)
        if found is not None:
            return found
    return None


class _ModuleTracker:
    """Keeps the path of the module whose forward is running, via forward pre/post hooks."""

    def __init__(self, model: nn.Module):
        self.stack: list[str] = [""]
        self.shapes: dict[str, list] = {}  # module path -> [input shape, output shape] of its first call
        self.handles = []
        self.type_scopes = type_scopes(model)
        for name, module in model.named_modules():
            if name:
                self.handles.append(module.register_forward_pre_hook(partial(self._enter, name)))
                self.handles.append(module.register_forward_hook(partial(self._exit, name), always_call=True))

    def _enter(self, name: str, module: nn.Module, args: tuple) -> None:
        self.stack.append(name)
        if name not in self.shapes:
            self.shapes[name] = [_first_shape(args), None]

    def _exit(self, name: str, module: nn.Module, args: tuple, output: Any) -> None:
        if self.stack[-1] == name:
            self.stack.pop()
        if name in self.shapes and self.shapes[name][1] is None:
            self.shapes[name][1] = _first_shape(output)

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


class OpCounter(TorchDispatchMode):
    """Dispatch mode that prices every aten op with the formulas and attributes it to a module."""

    def __init__(self, tracker: _ModuleTracker | None = None):
        super().__init__()
        self.tracker = tracker
        self.acc: dict[tuple[str, str, str, str], list[int]] = {}
        self.uncounted: dict[str, int] = defaultdict(int)
        self.acts: dict[tuple[str, str, str, str], int] = {}  # output elements per key (cnnprof.counting.acts)

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
        self.record(func, args, kwargs, out)
        return out

    def record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> Cost | None:
        """Price one op call (`func`: an OpOverload, or an aten name) and attribute it to the running module."""
        name = op_name(func)
        formula, scope = lookup(func)
        if formula is None:
            if not is_free(name):
                self.uncounted[name] += 1
            return None
        try:
            cost = formula(args, kwargs, out)
        except Exception as exc:  # noqa: BLE001 - must not be mistaken for the user's model failing
            raise _CounterBug(name) from exc
        module = self.tracker.current if self.tracker else ""
        kind = (self.tracker.declared_type(module) if self.tracker else None) or cost.type  # as params' --by type
        key = (module, name.rstrip("_"), kind, scope)
        a = self.acc.setdefault(key, [0, 0, 0])
        a[0] += cost.macs
        a[1] += cost.ops
        a[2] += 1
        self.acts[key] = self.acts.get(key, 0) + op_acts(name, cost.type, out)
        return cost

    def records(self) -> tuple[OpStat, ...]:
        return tuple(OpStat(m, op, t, s, *v, acts=self.acts.get((m, op, t, s), 0))
                     for (m, op, t, s), v in self.acc.items())


def parse_shape(shape: Sequence[int] | None, default: Sequence[int]) -> tuple[int, ...]:
    """Validate an input shape (all positive integers)."""
    shape = tuple(default if shape is None else shape)
    if not shape:
        raise CnnprofError(f"input shape must be positive integers like 1,3,224,224, got {shape}")
    return check_shape(shape)


class _CounterBug(Exception):
    """An error inside cnnprof's own counting (a formula), not the user's model: stays an internal error."""


def _meta_failure(exc: BaseException) -> bool:
    """True when an exception means 'this cannot run on meta tensors' (no kernel, reads values)."""
    return isinstance(exc, NotImplementedError) or "meta" in str(exc).lower()


# Words of torch's shape-mismatch messages ("size mismatch", "Expected ... channels", "mat1 and mat2 shapes").
_SHAPE_WORDS = re.compile(r"\b(size|sizes|shape|shapes|dimension|dimensions|channels|dims?)\b", re.IGNORECASE)


def forward_error(label: str, specs: Sequence[InputSpec], exc: BaseException) -> CnnprofError:
    """The user's model failed: its own one-line message, and which option sets its inputs."""
    msg = f"{type(exc).__name__}: {first_line(exc)}"
    if isinstance(exc, TypeError) and ("argument" in str(exc) or "forward()" in str(exc)):
        return InputShapeError(f"{label}: forward({describe(specs)}) failed: {msg}; its inputs are set by "
                               f"--input-shape (once per positional input) and --input NAME=SHAPE[:DTYPE]")
    if isinstance(exc, (RuntimeError, ValueError, IndexError)) and _SHAPE_WORDS.search(str(exc)):
        given = f"shape {specs[0].shape}" if len(specs) == 1 and specs[0].is_float else describe(specs)
        return InputShapeError(f"{label}: does not fit input {given}: {first_line(exc)} (set the inputs with "
                               f"--input-shape / --input)")
    return InputShapeError(f"{label}: forward({describe(specs)}) failed: {msg} (if these are not the inputs it "
                           f"expects, set them with --input-shape / --input)")


def _stand_ins(net: nn.Module) -> dict[str, torch.Tensor]:
    """Meta tensors like every parameter and buffer of `net` (nothing allocated, nothing copied)."""
    named = list(net.named_parameters(remove_duplicate=False)) + list(net.named_buffers(remove_duplicate=False))
    made: dict[int, torch.Tensor] = {}  # a tensor shared by two modules gets one stand-in
    for _, t in named:  # empty_strided, not empty_like: across devices that goes through a Python decomposition
        if id(t) not in made:
            made[id(t)] = t if t.is_meta else torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    return {name: made[id(t)] for name, t in named}


def _is_meta(net: nn.Module) -> bool:
    return all(t.is_meta for t in net.parameters()) and all(t.is_meta for t in net.buffers())


def _counted_run(net: nn.Module, args: tuple, kwargs: dict, on_meta: bool,
                 make_counter: Callable[[_ModuleTracker], OpCounter] = OpCounter) -> tuple[OpCounter, _ModuleTracker]:
    """One forward under the op counter: on meta (a CPU module through meta stand-ins, not a copy) or real."""
    from torch.func import functional_call

    tracker = _ModuleTracker(net)
    counter = make_counter(tracker)
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        # no_grad, not inference_mode: under inference_mode FlopCounterMode-style counting sees nothing
        # (pytorch#126268); on meta tensors nothing is computed either way.
        with torch.no_grad(), cheap_checks(), counter:
            if on_meta and not _is_meta(net):
                out = functional_call(net, _stand_ins(net), args, kwargs, tie_weights=True, strict=False)
            else:
                out = net(*args, **kwargs)
        tracker.shapes[""] = [_first_shape((args, kwargs)), _first_shape(out)]
    except _CounterBug as bug:
        original = bug.__cause__
        original._cnnprof_internal = True  # cnnprof's own bug: re-raised as itself, an internal error
        raise original from None
    finally:
        tracker.remove()
        for m, training in modes:
            m.training = training
    return counter, tracker


def count_flops(model: Any, input_shape: Sequence[int] | None = None, scope: str = "conv",
                backend: str = "torch", inputs: Any = None) -> FlopCount:
    """Count MACs of one forward pass of `model` (an nn.Module or a source, see cnnprof.counting.source).

    Inputs: `input_shape` (one tensor), or `inputs` (shape, tensor, tuple, dict; see cnnprof.inputs.normalize);
    neither: the model's declared input (config, `example_inputs()`, `default_input_shape`, timm's
    pretrained_cfg) or 1x3x224x224. Counted on meta tensors; a model that cannot run there (data-dependent
    ops such as nonzero, `.item()`) is run once for real on the CPU, and `method` says so."""
    if scope not in SCOPES:
        raise CnnprofError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if backend not in BACKENDS:
        raise CnnprofError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if input_shape is not None and inputs is not None:
        raise CnnprofError("give input_shape or inputs, not both")
    source = as_source(model)
    if input_shape is not None:
        inputs = (parse_shape(input_shape, ()),)
    if backend == "fvcore":
        if scope != "conv":
            raise CnnprofError("the fvcore backend cross-checks the conv scope only; use --backend torch for "
                               "--scope all")
        net = source.module if source.module is not None and not _is_meta(source.module) else source.rebuild("cpu")
        if net is None:
            raise CnnprofError(f"{source.label}: the fvcore backend runs real CPU tensors; pass the model built on "
                               f"the CPU")
        return _count_fvcore(source.label, net, source.inputs(net, inputs))
    counter, tracker, net, specs, method = trace(source, inputs)
    return FlopCount(
        model=source.label, input_shape=specs[0].shape if specs else (), scope=scope, backend="torch",
        records=counter.records(), uncounted=tuple(sorted(counter.uncounted.items())),
        module_names=tuple(name for name, _ in net.named_modules()), inputs=specs,
        method=method, module_shapes=tracker.shapes_table(),
    )


def trace(source: Any, inputs: Any, make_counter: Callable[[_ModuleTracker], OpCounter] = OpCounter):
    """Run `make_counter` over one forward of a resolved model: on meta, or once for real on the CPU when
    it cannot run there. Returns (counter, tracker, module, input specs, method "meta" | "cpu")."""
    source = as_source(source)
    net = source.module if source.module is not None else source.build("meta")
    args, kwargs = source.inputs(net, inputs)
    specs = as_specs(args, kwargs)
    try:
        return (*_counted_run(net, *materialize(args, kwargs), on_meta=True, make_counter=make_counter), net, specs,
                "meta")
    except Exception as exc:  # noqa: BLE001 - the user's forward: theirs to report, or a reason to run for real
        if getattr(exc, "_cnnprof_internal", False):
            raise
        if not _meta_failure(exc):
            raise forward_error(source.label, specs, exc) from None
        _check_fits(source.label, net, specs, exc)
        net = _real_model(source, net, exc)
    try:
        return (*_counted_run(net, *materialize(args, kwargs, real=True), on_meta=False, make_counter=make_counter),
                net, specs, "cpu")
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "_cnnprof_internal", False):
            raise
        raise forward_error(source.label, specs, exc) from None


def _check_fits(label: str, net: nn.Module, specs: Sequence[InputSpec], exc: BaseException) -> None:
    """Refuse a real CPU run whose weights and inputs alone would take over a third of the free memory."""
    import os
    from math import prod

    need = sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])
    need += sum(prod(s.shape) * 8 for s in specs)
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not available on this platform: try anyway
        return
    if 3 * need > free:
        raise CnnprofError(f"{label}: cannot run on the meta device ({first_line(exc)}), and a real CPU run needs "
                           f"{need / 2**30:.1f} GiB for weights and inputs alone ({free / 2**30:.1f} GiB free); "
                           f"try a smaller --input-shape") from None


def _real_model(source: Any, net: nn.Module, exc: BaseException) -> nn.Module:
    """A CPU model for a real run: `net` itself if it has real weights, else a fresh CPU build."""
    if not _is_meta(net):
        return net
    rebuilt = source.rebuild("cpu")
    if rebuilt is None:
        raise CnnprofError(f"{source.label}: cannot run on the meta device ({first_line(exc)}); pass the model "
                           f"built on the CPU to count it with a real forward pass") from None
    return rebuilt


def _count_fvcore(label: str, net: nn.Module, inputs: tuple[tuple, dict]) -> FlopCount:
    """fvcore's JIT-traced count on real CPU tensors, restricted to conv and matrix products."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import scripts a function with the deprecated torch.jit
        from fvcore.nn.jit_analysis import JitModelAnalysis
        from fvcore.nn.jit_handles import (addmm_flop_jit, bmm_flop_jit, conv_flop_jit, linear_flop_jit,
                                           matmul_flop_jit)

    from cnnprof.counting.params import module_type

    args, kwargs = inputs
    specs = as_specs(args, kwargs)
    if kwargs:
        raise CnnprofError(f"{label}: the fvcore backend traces positional inputs only; drop --input NAME=... "
                           f"or use --backend torch")
    args, _ = materialize(args, kwargs, real=True)
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    analysis = JitModelAnalysis(net, args).set_op_handle(
        "aten::_convolution", conv_flop_jit, "aten::addmm", addmm_flop_jit, "aten::linear", linear_flop_jit,
        "aten::matmul", matmul_flop_jit, "aten::mm", matmul_flop_jit, "aten::bmm", bmm_flop_jit,
    )
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation and tracer chatter
            inclusive = analysis.by_module_and_operator()
    except Exception as exc:  # noqa: BLE001 - the user's model failed under the tracer
        text = str(exc).lower()
        if isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text:
            # fvcore runs on real CPU tensors: running out of RAM is not a shape mismatch
            raise CnnprofError(f"{label}: out of memory running fvcore on real CPU tensors at {describe(specs)}; "
                               f"use --backend torch (meta device, no memory)") from None
        raise forward_error(label, specs, exc) from None
    finally:
        for m, training in modes:
            m.training = training
    modules = dict(net.named_modules())
    records = []
    for name, ops in inclusive.items():
        children = [f"{name}.{c}" if name else c for c, _ in modules[name].named_children()] if name in modules else []
        for op, total in ops.items():
            own = total - sum(inclusive.get(c, {}).get(op, 0) for c in children)
            if own:
                kind = module_type(modules[name]) if name in modules else "other"
                kind = "linear" if op in ("linear", "addmm", "matmul", "mm", "bmm") else kind
                records.append(OpStat(name, op, kind, "conv", int(own), 0, 1))
    return FlopCount(
        model=label, input_shape=specs[0].shape if specs else (), scope="conv", backend="fvcore",
        records=tuple(records), uncounted=(), module_names=tuple(modules), inputs=specs,
        method="cpu",
    )
