"""FLOP counting: dispatch-level (TorchDispatchMode on the meta device) or fvcore as a cross-check.

MACs are counted internally; conventions are applied only when asked (`FlopCount.flops`, see
cnnprof.analysis.conventions).
"""
from __future__ import annotations

import contextlib
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnprof.analysis.conventions import to_flops
from cnnprof.analysis.formulas import Cost, is_free, lookup
from cnnprof.analysis.types import module_ancestors, module_depth, type_sort_key
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
        """Per layer type (conv KxK, depthwise, pointwise, grouped, linear, norm, ...)."""
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

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# Shape-preserving ops whose meta output is simply a tensor like the input.
_SAME_SHAPE = frozenset("relu relu6 hardtanh hardswish hardsigmoid silu gelu sigmoid tanh leaky_relu elu mish".split())
_BATCH_NORMS = frozenset(("native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"))
_BINARY = frozenset(("add", "sub", "mul", "div"))


_MATMULS = frozenset(("mm", "bmm", "addmm"))


def _matmul_meta(name: str, args: tuple) -> torch.Tensor | None:
    """mm / bmm / addmm on meta: torch decomposes addmm through dynamo-disabled refs (importing torch._dynamo)."""
    a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
    tensors = [t for t in args[:3] if isinstance(t, torch.Tensor)]
    if len({t.dtype for t in tensors}) != 1 or not all(t.is_meta for t in tensors) or not a.is_floating_point():
        return None
    rank = 3 if name == "bmm" else 2
    if a.dim() != rank or b.dim() != rank or a.shape[-1] != b.shape[-2] or a.shape[:-2] != b.shape[:-2]:
        return None  # a mismatch: torch's own kernel raises the error
    if name == "addmm" and (args[0].dim() > 2 or args[0].shape[-1:] not in ((1,), (b.shape[1],), ())):
        return None
    if name == "bmm":
        return torch.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=a.dtype, device="meta")
    return torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype, device="meta")


def _conv_meta(x: torch.Tensor, w: Any, bias: Any, stride: Sequence[int], padding: Sequence[int],
               dilation: Sequence[int], transposed: bool, output_padding: Sequence[int], groups: int, *_: Any):
    """aten.convolution on contiguous meta tensors. torch's meta kernel checks shapes with torch._check, whose
    first call imports sympy (~1-2 s); an invalid shape returns None so that torch raises its own error."""
    if (not isinstance(w, torch.Tensor) or not w.is_meta or w.dtype != x.dtype or not x.is_contiguous()
            or not w.is_contiguous() or x.dim() != w.dim() or x.dim() < 3):
        return None
    n = x.dim() - 2
    stride, padding, dilation = (list(v) * (n if len(v) == 1 else 1) for v in (stride, padding, dilation))
    output_padding = list(output_padding) * (n if len(output_padding) == 1 else 1)
    if transposed:
        out_c = groups * w.shape[1]
        ok = w.shape[0] == x.shape[1]
        size = [(x.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w.shape[2 + i] - 1)
                + output_padding[i] + 1 for i in range(n)]
    else:
        out_c = w.shape[0]
        ok = w.shape[1] * groups == x.shape[1] and out_c % groups == 0
        size = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1
                for i in range(n)]
    if not ok or any(d <= 0 for d in size) or len(stride) != n or len(padding) != n:
        return None
    return torch.empty((x.shape[0], out_c, *size), dtype=x.dtype, device="meta")


def _max_pool_meta(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int] = (), padding: Any = 0,
                   dilation: Any = 1, ceil_mode: bool = False):
    """max_pool2d_with_indices on a contiguous NCHW meta tensor (torch's meta kernel imports sympy)."""
    two = lambda v: [v, v] if isinstance(v, int) else list(v) * (2 if len(v) == 1 else 1)  # noqa: E731
    k, s, p, d = two(kernel), two(stride or kernel), two(padding), two(dilation)
    if x.dim() != 4 or not x.is_contiguous() or not x.is_floating_point():
        return None
    size = []
    for i in range(2):
        n = x.shape[2 + i] + 2 * p[i] - d[i] * (k[i] - 1) - 1 + (s[i] - 1 if ceil_mode else 0)
        out = n // s[i] + 1
        if ceil_mode and (out - 1) * s[i] >= x.shape[2 + i] + p[i]:
            out -= 1
        size.append(out)
    if any(o <= 0 for o in size) or any(2 * p[i] > k[i] for i in range(2)):
        return None
    shape = (*x.shape[:2], *size)
    return torch.empty(shape, dtype=x.dtype, device="meta"), torch.empty(shape, dtype=torch.int64, device="meta")


def _cat_meta(tensors: Sequence[Any], dim: int) -> torch.Tensor | None:
    """torch.cat of contiguous same-dtype meta tensors (torch's meta cat goes through dynamo-disabled refs)."""
    ts = [t for t in tensors if isinstance(t, torch.Tensor) and t.numel() > 0]
    if (len(ts) != len(tensors) or not ts or len({t.dtype for t in ts}) != 1 or len({t.dim() for t in ts}) != 1
            or not all(t.is_meta and t.is_contiguous() for t in ts)):
        return None
    shape, d = list(ts[0].shape), dim % ts[0].dim()
    if any(t.shape[:d] != ts[0].shape[:d] or t.shape[d + 1:] != ts[0].shape[d + 1:] for t in ts):
        return None  # a mismatch: torch's own kernel raises the error
    shape[d] = sum(t.shape[d] for t in ts)
    return torch.empty(shape, dtype=ts[0].dtype, device="meta")


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """Broadcast shape of a and b, or None if they do not broadcast (torch.broadcast_shapes imports sympy)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    if any(i != j and 1 not in (i, j) for i, j in zip(a, b)):
        return None
    return tuple(max(i, j) if 0 not in (i, j) else 0 for i, j in zip(a, b))


def _like(x: torch.Tensor) -> torch.Tensor:
    """torch.empty_like(x) for a meta tensor without torch's Python ref for it (which imports sympy)."""
    if x.is_contiguous():
        return torch.empty(x.shape, dtype=x.dtype, device="meta")
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.empty(x.shape, dtype=x.dtype, device="meta", memory_format=torch.channels_last)
    return torch.empty_like(x)


def _reduced_shape(x: torch.Tensor, dims: Any, keepdim: bool) -> list[int]:
    dims = range(x.dim()) if dims is None or (isinstance(dims, (list, tuple)) and not dims) else (
        dims if isinstance(dims, (list, tuple)) else [dims])
    axes = {d % x.dim() for d in dims} if x.dim() else set()
    return [1 if i in axes else n for i, n in enumerate(x.shape) if keepdim or i not in axes]


def fast_meta(name: str, args: tuple, kwargs: dict | None = None) -> Any:
    """The output of a common shape-preserving op on meta tensors, without torch's meta kernel, or None.

    torch implements these meta kernels as Python decompositions: BatchNorm alone costs ~5 ms a call and
    made up most of a MobileNet's counting time. The formulas only need shapes, so for these ops an
    empty tensor of the right shape, dtype and layout is the same answer. Anything else returns None.
    """
    x = args[0] if args else None
    if name == "cat" and isinstance(x, (list, tuple)):
        return _cat_meta(x, args[1] if len(args) > 1 else (kwargs or {}).get("dim", 0))
    if not isinstance(x, torch.Tensor) or not x.is_meta:
        return None
    if name in _MATMULS:
        return _matmul_meta(name, args)
    if name == "convolution":
        return _conv_meta(*args)
    if name == "max_pool2d_with_indices":
        return _max_pool_meta(*args)
    if name == "_adaptive_avg_pool2d" and x.dim() == 4 and x.is_contiguous() and x.is_floating_point():
        size = [args[1]] * 2 if isinstance(args[1], int) else list(args[1])
        return torch.empty((*x.shape[:2], *size), dtype=x.dtype, device="meta") if all(size) else None
    inplace = name.endswith("_") and not name.endswith("__")
    base = name.rstrip("_") if inplace else name
    if base in _SAME_SHAPE:
        return x if inplace else _like(x)
    if name in _BATCH_NORMS:
        stats = x.new_empty((x.shape[1],))
        return _like(x), stats, stats.clone()
    if name == "native_layer_norm":  # (input, normalized_shape, weight, bias, eps): contiguous output
        stats = tuple(x.shape[: x.dim() - len(args[1])]) + (1,) * len(args[1])
        return torch.empty(x.shape, dtype=x.dtype, device="meta"), x.new_empty(stats), x.new_empty(stats)
    if name == "mean" and x.is_floating_point() and not (kwargs or {}).get("dtype"):
        # torch's meta mean is a torch._refs decomposition wrapped in dynamo.disable: it would import
        # torch._dynamo (~2 s) on the first count of any model with global average pooling.
        kwargs = kwargs or {}
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        return torch.empty(_reduced_shape(x, dims, keepdim), dtype=x.dtype, device="meta")
    if base in _BINARY and len(args) == 2 and x.is_floating_point():
        y = args[1]
        if isinstance(y, torch.Tensor) and (not y.is_meta or y.dtype != x.dtype):
            return None  # dtype promotion or mixed devices: let torch decide
        if inplace:
            return x
        if not isinstance(y, torch.Tensor) or y.shape == x.shape:
            return _like(x)
        shape = _broadcast(tuple(x.shape), tuple(y.shape))
        return None if shape is None else torch.empty(shape, dtype=x.dtype, device="meta")
    return None


class OpCounter(TorchDispatchMode):
    """Dispatch mode that prices every aten op with the formulas and attributes it to a module."""

    def __init__(self, tracker: _ModuleTracker | None = None):
        super().__init__()
        self.tracker = tracker
        self.acc: dict[tuple[str, str, str, str], list[int]] = {}
        self.uncounted: dict[str, int] = defaultdict(int)

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
        self.record(name, args, kwargs, out)
        return out

    def record(self, name: str, args: tuple, kwargs: dict, out: Any) -> Cost | None:
        formula, scope = lookup(name)
        if formula is None:
            if not is_free(name):
                self.uncounted[name] += 1
            return None
        try:
            cost = formula(args, kwargs, out)
        except Exception as exc:  # noqa: BLE001 - must not be mistaken for the user's model failing
            raise _CounterBug(name) from exc
        key = (self.tracker.current if self.tracker else "", name.rstrip("_"), cost.type, scope)
        a = self.acc.setdefault(key, [0, 0, 0])
        a[0] += cost.macs
        a[1] += cost.ops
        a[2] += 1
        return cost

    def records(self) -> tuple[OpStat, ...]:
        return tuple(OpStat(m, op, t, s, *v) for (m, op, t, s), v in self.acc.items())


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
        return InputShapeError(f"{label}: forward({describe(specs)}) failed: {msg}; give each positional input "
                               f"with a repeated --input-shape and keyword inputs with --input NAME=SHAPE[:DTYPE]")
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


@contextlib.contextmanager
def _cheap_checks():
    """torch's meta kernels validate shapes with torch._check(cond), whose first call imports sympy (~1-2 s, the
    largest part of a first count) even when cond is a plain True. While counting, a plain True returns at once;
    anything else (False, symbolic) goes to torch's own check unchanged."""
    original = torch._check_with

    def check_with(error_type, cond, message, *args, **kwargs):
        if cond is True:
            return None
        return original(error_type, cond, message, *args, **kwargs)

    torch._check_with = check_with
    try:
        yield
    finally:
        torch._check_with = original


def _counted_run(net: nn.Module, args: tuple, kwargs: dict, on_meta: bool) -> tuple[OpCounter, _ModuleTracker]:
    """One forward under the op counter: on meta (a CPU module through meta stand-ins, not a copy) or real."""
    from torch.func import functional_call

    tracker = _ModuleTracker(net)
    counter = OpCounter(tracker)
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        # no_grad, not inference_mode: under inference_mode FlopCounterMode-style counting sees nothing
        # (pytorch#126268); on meta tensors nothing is computed either way.
        with torch.no_grad(), _cheap_checks(), counter:
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
                backend: str = "torch", overrides: dict | None = None, inputs: Any = None) -> FlopCount:
    """Count MACs of one forward pass of `model` (nn.Module or model spec).

    Inputs: `input_shape` (one tensor), or `inputs` (shape, tensor, tuple, dict; see cnnprof.inputs.normalize);
    neither: the model's declared input (config, `example_inputs()`, `default_input_shape`, timm's
    pretrained_cfg) or 1x3x224x224. Counted on meta tensors; a model that cannot run there (data-dependent
    ops such as nonzero, `.item()`) is run once for real on the CPU, and `method` says so."""
    from cnnprof.models.spec import model_inputs, resolve

    if scope not in SCOPES:
        raise CnnprofError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if backend not in BACKENDS:
        raise CnnprofError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if input_shape is not None and inputs is not None:
        raise CnnprofError("give input_shape or inputs, not both")
    source = resolve(model, overrides)
    if input_shape is not None:
        inputs = (parse_shape(input_shape, ()),)
    if backend == "fvcore":
        if scope != "conv":
            raise CnnprofError("the fvcore backend cross-checks the conv scope only; use --backend torch for "
                               "--scope all")
        net = source.build("cpu") if source.module is None or _is_meta(source.module) else source.module
        return _count_fvcore(source.label, net, model_inputs(source, net, inputs))
    net = source.module if source.module is not None else source.build("meta")
    args, kwargs = model_inputs(source, net, inputs)
    specs = as_specs(args, kwargs)
    method = "meta"
    try:
        counter, tracker = _counted_run(net, *materialize(args, kwargs), on_meta=True)
    except Exception as exc:  # noqa: BLE001 - the user's forward: theirs to report, or a reason to run for real
        if getattr(exc, "_cnnprof_internal", False):
            raise
        if not _meta_failure(exc):
            raise forward_error(source.label, specs, exc) from None
        net, method = _real_model(source, net, exc), "cpu"
        try:
            counter, tracker = _counted_run(net, *materialize(args, kwargs, real=True), on_meta=False)
        except Exception as exc2:  # noqa: BLE001
            if getattr(exc2, "_cnnprof_internal", False):
                raise
            raise forward_error(source.label, specs, exc2) from None
    return FlopCount(
        model=source.label, input_shape=specs[0].shape if specs else (), scope=scope, backend="torch",
        records=counter.records(), uncounted=tuple(sorted(counter.uncounted.items())),
        module_names=tuple(name for name, _ in net.named_modules()), inputs=specs,
        method=method, module_shapes=tracker.shapes_table(),
    )


def _real_model(source: Any, net: nn.Module, exc: BaseException) -> nn.Module:
    """A CPU model for a real run: `net` itself if it has real weights, else a fresh CPU build."""
    if not _is_meta(net):
        return net
    if source.config is None and source.factory is None:
        raise CnnprofError(f"{source.label}: cannot run on the meta device ({first_line(exc)}); pass the model "
                           f"built on the CPU to count it with a real forward pass") from None
    from dataclasses import replace

    return replace(source, module=None).build("cpu")


def _count_fvcore(label: str, net: nn.Module, inputs: tuple[tuple, dict]) -> FlopCount:
    """fvcore's JIT-traced count on real CPU tensors, restricted to conv and matrix products."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import scripts a function with the deprecated torch.jit
        from fvcore.nn.jit_analysis import JitModelAnalysis
        from fvcore.nn.jit_handles import (addmm_flop_jit, bmm_flop_jit, conv_flop_jit, linear_flop_jit,
                                           matmul_flop_jit)

    from cnnprof.analysis.params import module_type

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
