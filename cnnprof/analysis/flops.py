"""FLOP counting: dispatch-level (TorchDispatchMode on the meta device) or fvcore as a cross-check.

MACs are counted internally; conventions are applied only when asked (`FlopCount.flops`, see
cnnprof.analysis.conventions).
"""
from __future__ import annotations

import copy
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnprof.analysis.acts import op_acts
from cnnprof.analysis.conventions import to_flops
from cnnprof.analysis.formulas import Cost, is_free, lookup
from cnnprof.analysis.types import module_ancestors, module_depth, type_sort_key
from cnnprof.errors import CnnprofError, InputShapeError, first_line

SCOPES = ("conv", "all")
MAX_INPUT_ELEMENTS = 1 << 40  # ~4 TB of float32: beyond any real input, below int64 overflow inside
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
    acts: int = 0  # output elements of conv / linear / windowed pooling (cnnprof.analysis.acts)


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


class _ModuleTracker:
    """Keeps the path of the module whose forward is running, via forward pre/post hooks."""

    def __init__(self, model: nn.Module):
        from cnnprof.models.layers import SqueezeExcite

        self.stack: list[str] = [""]
        self.handles = []
        self.se_scopes = tuple(n for n, m in model.named_modules() if isinstance(m, SqueezeExcite))
        for name, module in model.named_modules():
            if name:
                self.handles.append(module.register_forward_pre_hook(partial(self._enter, name)))
                self.handles.append(module.register_forward_hook(partial(self._exit, name), always_call=True))

    def _enter(self, name: str, *_: Any) -> None:
        self.stack.append(name)

    def _exit(self, name: str, *_: Any) -> None:
        if self.stack[-1] == name:
            self.stack.pop()

    @property
    def current(self) -> str:
        return self.stack[-1]

    def in_se(self, path: str) -> bool:
        """Whether `path` is inside a squeeze-and-excitation module (its ops count as type SE)."""
        return any(path == s or path.startswith(s + ".") for s in self.se_scopes)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# Shape-preserving ops whose meta output is simply a tensor like the input.
_SAME_SHAPE = frozenset("relu relu6 hardtanh hardswish hardsigmoid silu gelu sigmoid tanh leaky_relu elu mish".split())
_BATCH_NORMS = frozenset(("native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"))
_BINARY = frozenset(("add", "sub", "mul", "div"))


def fast_meta(name: str, args: tuple) -> Any:
    """The output of a common shape-preserving op on meta tensors, without torch's meta kernel, or None.

    torch implements these meta kernels as Python decompositions: BatchNorm alone costs ~5 ms a call and
    made up most of a MobileNet's counting time. The formulas only need shapes, so for these ops an
    empty tensor of the right shape, dtype and layout is the same answer. Anything else returns None.
    """
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not x.is_meta:
        return None
    inplace = name.endswith("_") and not name.endswith("__")
    base = name.rstrip("_") if inplace else name
    if base in _SAME_SHAPE:
        return x if inplace else torch.empty_like(x)
    if name in _BATCH_NORMS:
        stats = x.new_empty((x.shape[1],))
        return torch.empty_like(x), stats, stats.clone()
    if name == "native_layer_norm":  # (input, normalized_shape, weight, bias, eps): contiguous output
        stats = tuple(x.shape[: x.dim() - len(args[1])]) + (1,) * len(args[1])
        return torch.empty(x.shape, dtype=x.dtype, device="meta"), x.new_empty(stats), x.new_empty(stats)
    if base in _BINARY and len(args) == 2 and x.is_floating_point():
        y = args[1]
        if isinstance(y, torch.Tensor) and (not y.is_meta or y.dtype != x.dtype):
            return None  # dtype promotion or mixed devices: let torch decide
        if inplace:
            return x
        if not isinstance(y, torch.Tensor) or y.shape == x.shape:
            return torch.empty_like(x)
        return torch.empty(torch.broadcast_shapes(x.shape, y.shape), dtype=x.dtype, device="meta")
    return None


class OpCounter(TorchDispatchMode):
    """Dispatch mode that prices every aten op with the formulas and attributes it to a module."""

    def __init__(self, tracker: _ModuleTracker | None = None):
        super().__init__()
        self.tracker = tracker
        self.acc: dict[tuple[str, str, str, str], list[int]] = {}
        self.uncounted: dict[str, int] = defaultdict(int)
        self.acts: dict[tuple[str, str, str, str], int] = {}  # output elements per key (cnnprof.analysis.acts)

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Counting never runs under torch.compile; letting torch wrap __torch_dispatch__ in
        # dynamo.disable would import torch._dynamo (~2 s) on the first counted op.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        out = fast_meta(name, args)
        if out is None:
            out = func(*args, **kwargs)
        self.record(name, args, kwargs, out)
        return out

    def record(self, name: str, args: tuple, kwargs: dict, out: Any) -> Cost | None:
        formula, scope = lookup(name)
        if formula is None:
            if not is_free(name):
                self.uncounted[name] += 1
            return None
        cost = formula(args, kwargs, out)
        module = self.tracker.current if self.tracker else ""
        kind = "SE" if self.tracker and self.tracker.in_se(module) else cost.type  # as params' --by type
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
    if not shape or any(not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in shape):
        raise CnnprofError(f"input shape must be positive integers like 1,3,224,224, got {shape}"[:300])
    # Bounded so that no activation can overflow a tensor's size (channel counts are bounded by the config).
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise CnnprofError(f"input shape {'x'.join(map(str, shape))}"[:120] + f" has more than 2^40 "
                           f"({MAX_INPUT_ELEMENTS:,}) elements; reduce the batch size or resolution")
    return shape


def run_forward(model: nn.Module, x: torch.Tensor, label: str) -> Any:
    """Forward pass that turns shape errors into a one-line InputShapeError."""
    try:
        return model(x)
    except NotImplementedError as exc:
        raise CnnprofError(f"{label}: an op has no meta-device kernel ({first_line(exc)}); "
                           f"count it with --backend fvcore instead") from None
    except (RuntimeError, ValueError, IndexError) as exc:
        if x.is_meta and "meta" in str(exc).lower():
            raise CnnprofError(f"{label}: cannot run on the meta device, it reads tensor values "
                               f"({first_line(exc)}); count it with --backend fvcore instead") from None
        raise InputShapeError(f"{label}: does not fit input shape {tuple(x.shape)}: {first_line(exc)}") from None


def count_flops(model: Any, input_shape: Sequence[int] | None = None, scope: str = "conv",
                backend: str = "torch", overrides: dict | None = None) -> FlopCount:
    """Count MACs of one forward pass of `model` (nn.Module or model spec) at `input_shape`."""
    from cnnprof.models.spec import resolve

    if scope not in SCOPES:
        raise CnnprofError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if backend not in BACKENDS:
        raise CnnprofError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    source = resolve(model, overrides)
    shape = parse_shape(input_shape, source.default_input_shape)
    if backend == "fvcore":
        if scope != "conv":
            raise CnnprofError("the fvcore backend cross-checks the conv scope only; use --backend torch for "
                               "--scope all")
        return _count_fvcore(source, shape)
    if source.module is not None:
        # A built module: count it on meta (a meta copy of a real one) so that nothing is allocated.
        on_meta = all(p.is_meta for p in source.module.parameters())
        net = source.module if on_meta else copy.deepcopy(source.module).to("meta").eval()
    else:
        net = source.build("meta")
    tracker = _ModuleTracker(net)
    counter = OpCounter(tracker)
    try:
        # no_grad, not inference_mode: under inference_mode FlopCounterMode-style counting sees nothing
        # (pytorch#126268); on meta tensors nothing is computed either way.
        with torch.no_grad(), counter:
            run_forward(net, torch.empty(shape, device="meta"), source.label)
    finally:
        tracker.remove()
    return FlopCount(
        model=source.label, input_shape=shape, scope=scope, backend="torch", records=counter.records(),
        uncounted=tuple(sorted(counter.uncounted.items())),
        module_names=tuple(name for name, _ in net.named_modules()),
    )


def _count_fvcore(source, shape: tuple[int, ...]) -> FlopCount:
    """fvcore's JIT-traced count on real CPU tensors, restricted to conv and matrix products."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import scripts a function with the deprecated torch.jit
        from fvcore.nn.jit_analysis import JitModelAnalysis
        from fvcore.nn.jit_handles import (addmm_flop_jit, bmm_flop_jit, conv_flop_jit, linear_flop_jit,
                                           matmul_flop_jit)

    from cnnprof.analysis.params import module_type

    net = source.build("cpu") if source.module is None else source.module.cpu().eval()
    x = torch.zeros(shape)
    analysis = JitModelAnalysis(net, (x,)).set_op_handle(
        "aten::_convolution", conv_flop_jit, "aten::addmm", addmm_flop_jit, "aten::linear", linear_flop_jit,
        "aten::matmul", matmul_flop_jit, "aten::mm", matmul_flop_jit, "aten::bmm", bmm_flop_jit,
    )
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation and tracer chatter
            inclusive = analysis.by_module_and_operator()
    except (RuntimeError, ValueError, IndexError, MemoryError) as exc:
        text = str(exc).lower()
        if isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text:
            # fvcore runs on real CPU tensors: running out of RAM is not a shape mismatch
            raise CnnprofError(f"{source.label}: out of memory running fvcore on real CPU tensors at {shape}; "
                               f"use --backend torch (meta device, no memory)") from None
        raise InputShapeError(f"{source.label}: does not fit input shape {shape}: {first_line(exc)}") from None
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
        model=source.label, input_shape=shape, scope="conv", backend="fvcore", records=tuple(records),
        uncounted=(), module_names=tuple(modules),
    )
