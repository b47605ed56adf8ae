"""Live bytes of storages over an op sequence on meta tensors: the allocator's bookkeeping without the memory.

`LiveBytes` (a dispatch mode) counts every storage an op allocates, once, until its StorageImpl is freed; on
the CPU it adds the scratch oneDNN's convolution holds while it runs (`cpu_workspace`). Common ops get their
meta outputs from shapes alone (cnnprof.counting.meta_fast and the backward ops here): torch's Python meta
kernels for them cost most of a simulated step, and some import torch._dynamo. cnnprof.counting.footprint
runs passes under it.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cnnprof.counting.meta_fast import _reduced_shape, fast_meta

__all__ = ["FAST", "LiveBytes", "cpu_workspace", "storage_bytes", "storage_key"]


def storage_key(t: torch.Tensor) -> int:
    """Identity of a tensor's storage (views share it): the address of its StorageImpl."""
    return t.untyped_storage()._cdata


def storage_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the distinct storages behind `tensors` (non-tensors are skipped), each counted once."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            seen.setdefault(storage_key(t), t.untyped_storage().nbytes())
    return sum(seen.values())


FAST = [True]  # shape-only outputs for common ops on meta (tests switch it off to check it against torch's kernels)


def _empty_like(t: torch.Tensor) -> torch.Tensor | None:
    return torch.empty(t.shape, dtype=t.dtype, device="meta") if t.is_contiguous() else None


def _fast_backward(name: str, args: tuple) -> Any:
    """Outputs of the common backward ops on contiguous meta tensors, from shapes alone (torch's meta kernels for
    them are Python decompositions, most of a simulated step's time), or None: torch decides."""
    if name in ("threshold_backward", "_log_softmax_backward_data", "nll_loss_backward") and (
            args[0].shape == args[1].shape or name == "nll_loss_backward"):
        return _empty_like(args[1] if name == "nll_loss_backward" else args[0])
    if name in ("_log_softmax", "full_like"):  # the loss's log-softmax and backward's seed (ones_like): torch's
        return _empty_like(args[0])            # meta kernels import torch._dynamo and sympy (seconds)
    if name == "nll_loss_forward" and args[0].dim() == 2 and args[2] is None and args[3] == 1:  # mean, no weight
        return args[0].new_empty(()), args[0].new_empty(())
    if name == "convolution_backward":
        grad, x, w, bias_sizes, mask = args[0], args[1], args[2], args[3], args[10]
        outs = (_empty_like(x) if mask[0] else None, _empty_like(w) if mask[1] else None,
                torch.empty(bias_sizes, dtype=grad.dtype, device="meta") if mask[2] and bias_sizes else None)
        return None if (mask[0] and outs[0] is None) or (mask[1] and outs[1] is None) or (
            mask[2] and outs[2] is None) else outs
    if name == "native_batch_norm_backward" and args[2] is not None and args[0].shape == args[1].shape:
        mask, w = args[9], args[2]
        gx = _empty_like(args[1]) if mask[0] else None
        if mask[0] and gx is None:
            return None
        return gx, _empty_like(w) if mask[1] else None, _empty_like(w) if mask[2] else None
    return None


_BACKWARD = frozenset(("threshold_backward", "convolution_backward", "native_batch_norm_backward", "_log_softmax",
                       "nll_loss_forward", "nll_loss_backward", "_log_softmax_backward_data", "full_like"))


def _sum(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """sum of a float tensor in its own dtype (a bias's gradient): torch's meta kernel is a Python reduction
    whose first call imports sympy (~1 s)."""
    x = args[0]
    if not x.is_floating_point() or kwargs.get("dtype") is not None or (len(args) > 3 and args[3] is not None):
        return None
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    return torch.empty(_reduced_shape(x, dims, keepdim), dtype=x.dtype, device="meta")


def _fast(name: str, args: tuple, kwargs: dict | None) -> Any:
    """A shape-only output for `name` on meta tensors (cnnprof.counting.meta_fast, and the backward ops here)."""
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_meta:
        return None
    if name == "sum":
        return _sum(args, kwargs or {})
    if name not in _BACKWARD:
        return fast_meta(name, args, kwargs)
    if kwargs and any(kwargs.get(k) not in (None, v) for k, v in (
            ("dtype", args[0].dtype), ("device", args[0].device), ("layout", torch.strided),
            ("memory_format", torch.preserve_format))):
        return None  # full_like into another dtype, device or layout: torch decides
    floats = [a for a in args[:3] if isinstance(a, torch.Tensor) and a.is_floating_point()]
    if not all(a.is_meta and a.dtype == args[0].dtype for a in floats):
        return None  # mixed devices or dtypes: torch decides
    return _fast_backward(name, args)


# Norms whose saved statistics follow the weight's dtype when the input's is lower (mixed precision: a bfloat16
# input under autocast, float32 weights): what the CPU kernels return (torch 2.13), where the shape-only path
# and torch's meta kernel of group_norm give the input's dtype. Name -> index of the weight argument.
_NORM_WEIGHT = {"native_batch_norm": 1, "_native_batch_norm_legit": 1, "_native_batch_norm_legit_no_training": 1,
                "native_layer_norm": 2, "native_group_norm": 1}


def _mixed_norm(name: str, args: tuple, out: Any) -> Any:
    """`out` of a norm with its statistics in the weight's dtype when input and weight dtypes differ."""
    if name not in _NORM_WEIGHT or len(args) <= _NORM_WEIGHT[name] or not isinstance(out, tuple):
        return out
    x, w = args[0], args[_NORM_WEIGHT[name]]
    if not isinstance(w, torch.Tensor) or not x.is_meta or w.dtype == x.dtype or not w.is_floating_point():
        return out
    return (out[0], *(torch.empty(t.shape, dtype=w.dtype, device="meta") for t in out[1:3]), *out[3:])


class LiveBytes(TorchDispatchMode):
    """Live bytes of the storages ops allocate inside the mode, and their peak (see the module docstring).

    A storage is live while its C++ StorageImpl is (a weak reference to it expires when the last tensor or
    autograd buffer holding it goes): the Python wrapper of an op's output can die long before, e.g. a
    gradient that autograd keeps. Expired storages are swept only when the count would set a new peak, since
    an overcount below the peak changes nothing."""

    def __init__(self, workspace: Any = None) -> None:
        super().__init__()
        self.live = 0  # an upper bound between sweeps: storages that expired since the last sweep still count
        self.peak = 0
        self.workspace = workspace  # (op name, args, output) -> bytes a kernel holds only while it runs
        self._owned: dict[int, tuple[Any, int]] = {}  # storage key -> (weak reference, bytes)

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never under torch.compile; avoids importing torch._dynamo

    def sweep(self) -> None:
        """Drop the storages that have been freed since the last sweep."""
        for key in [k for k, (ref, _) in self._owned.items() if ref.expired()]:
            self.live -= self._owned.pop(key)[1]

    def _add(self, t: torch.Tensor) -> None:
        key = storage_key(t)
        if key in self._owned:
            if not self._owned[key][0].expired():
                return  # a storage already counted (an output that shares an input's storage)
            self.live -= self._owned.pop(key)[1]  # freed, and its address reused by this new one
        storage = t.untyped_storage()
        n = storage.nbytes()
        self._owned[key] = (StorageWeakRef(storage), n)
        self.live += n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = _fast(func.overloadpacket.__name__, args, kwargs) if FAST else None
        if out is None:
            out = func(*args, **(kwargs or {}))
        out = _mixed_norm(func.overloadpacket.__name__, args, out)
        if not any(r.alias_info is not None for r in func._schema.returns):
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self._add(t)
            extra = self.workspace(func.overloadpacket.__name__, args, out) if self.workspace else 0
            if self.live + extra > self.peak:
                self.sweep()
                self.peak = max(self.peak, self.live + extra)
        return out


def _nbytes(t: Any) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def cpu_workspace(name: str, args: tuple, out: Any) -> int:
    """Bytes a CPU kernel holds while it runs, beyond its output: oneDNN's convolution copies the input and the
    weight into its blocked layout and writes the output into a buffer of its own before the copy that is
    returned, so it holds max(input + weight, output) more (measured with the allocator's profiler events on
    torch 2.13, every zoo conv). A bfloat16 pointwise (1x1, ungrouped) convolution also holds a float32
    accumulator of one image's output, channels rounded up to 16, beside the copies (measured the same way;
    it shows at small batches). Other kernels' scratch is not modelled."""
    if name != "convolution" or len(args) < 2:
        return 0
    x, w = args[0], args[1]
    copies = _nbytes(x) + _nbytes(w)
    if _pointwise(x, w, args) and isinstance(out, torch.Tensor) and out.dim() >= 3:
        copies += 4 * -(-out.shape[1] // 16) * 16 * _numel(out.shape[2:])
    return max(copies, _nbytes(out))


def _pointwise(x: Any, w: Any, args: tuple) -> bool:
    """A bfloat16 1x1 convolution with one group, not transposed (aten.convolution's arguments)."""
    return (isinstance(w, torch.Tensor) and x.dtype == torch.bfloat16 and w.dim() >= 3
            and all(k == 1 for k in w.shape[2:]) and len(args) > 8 and args[8] == 1 and not args[6])


def _numel(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
