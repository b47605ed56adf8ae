"""Meta-tensor outputs of common ops computed from shapes alone, for the counting dispatch mode.

torch implements many meta kernels in Python (decompositions, torch._refs): BatchNorm alone costs ~5 ms a call,
and the first use of torch._check / broadcast_shapes / refs imports sympy and torch._dynamo (seconds). The
formulas only need shapes, so for these ops an empty meta tensor of the right shape, dtype and layout is the same
answer. Anything unusual (mixed dtypes or devices, odd layouts, invalid shapes) returns None and torch decides,
raising its own errors. tests/test_formulas.py checks every fast path against torch's meta kernels.
"""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch

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


@contextlib.contextmanager
def cheap_checks():
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
