"""Mixed precision (torch.autocast) emulated on meta tensors, where autocast itself does nothing.

`Autocast` is a TorchFunctionMode: it runs above autograd, as autocast does, so the casts it makes with `.to()`
are recorded by autograd and an op saves the cast tensors for backward just as under real autocast. Per op,
by name, it applies autocast's policy for the device (aten/src/ATen/autocast_mode.cpp/.h): the ops of the
lower-precision list get their floating arguments cast to bfloat16 (CPU) or float16 (CUDA); those of the
float32 list get theirs cast up to float32; cat / stack / index_copy promote to the widest floating type;
every other op runs in the dtypes it is given. Casts of float32 leaf tensors that require grad (the weights)
are cached until the mode exits, as autocast caches them within its region (not under torch.inference_mode:
there real autocast caches nothing, and each cast weight dies after its op; `cache=False`). float64 is never cast.

A TorchFunctionMode sees the function that was called, not what runs inside it: a Python functional that is
on no list (F.batch_norm, F.layer_norm on the CPU, ...) runs as given, and the ops it calls are not cast
(real autocast sees those ops at the dispatcher). None of the zoo's functionals call a listed op inside;
F.multi_head_attention_forward does, and is cast as a whole (its projections are linear, its products bmm).
"""
from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["AMP_DTYPES", "Autocast", "real_autocast"]

AMP_DTYPES = {"cpu": "bfloat16", "cuda": "float16"}  # torch.autocast's default dtype per device

# Names as a TorchFunctionMode sees them: F.conv2d is `conv2d`, x @ w is `__matmul__`, F.cross_entropy (whose
# aten op, cross_entropy_loss, is on the list) is `cross_entropy`.
_MATMUL = ("mm", "bmm", "matmul", "__matmul__", "__rmatmul__", "addmm", "addbmm", "baddbmm", "linear",
           "linalg_vecdot", "scaled_dot_product_attention", "multi_head_attention_forward")
# einsum and tensordot are on no CPU list, but decompose into bmm / mm, which are: their results are bfloat16
# under real CPU autocast (checked on torch 2.13), so their operands are cast here.
_LOWER_CPU = frozenset(_MATMUL + ("conv1d", "conv2d", "conv3d", "conv_tbc", "_convolution", "conv_transpose1d",
                                  "conv_transpose2d", "conv_transpose3d", "prelu", "einsum", "tensordot"))
_LOSSES = ("cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div",
           "binary_cross_entropy_with_logits", "poisson_nll_loss", "cosine_embedding_loss", "hinge_embedding_loss",
           "margin_ranking_loss", "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss",
           "multilabel_margin_loss", "cdist")
_FP32_CPU = frozenset(_LOSSES + ("binary_cross_entropy", "avg_pool3d", "max_pool3d", "adaptive_avg_pool3d",
                                 "adaptive_max_pool3d", "fractional_max_pool2d", "fractional_max_pool3d",
                                 "max_unpool2d", "max_unpool3d", "grid_sample", "prod", "quantile", "nanquantile",
                                 "stft", "trace", "polar", "view_as_complex", "fft_fft", "fft_ifft", "fft_fft2",
                                 "fft_ifft2", "fft_fftn", "fft_ifftn", "fft_rfft", "fft_irfft", "fft_rfft2",
                                 "fft_irfft2", "fft_rfftn", "fft_irfftn", "fft_hfft", "fft_ihfft"))
_LOWER_CUDA = frozenset(_MATMUL + ("conv1d", "conv2d", "conv3d", "conv_tbc", "convolution", "_convolution",
                                   "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "prelu", "addmv",
                                   "addr", "einsum", "mv", "chain_matmul", "linalg_multi_dot", "lstm_cell",
                                   "gru_cell", "rnn_tanh_cell", "rnn_relu_cell"))
_FP32_CUDA = frozenset(_LOSSES + ("acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2",
                                  "log1p", "reciprocal", "rsqrt", "sinh", "tan", "pow", "softplus", "layer_norm",
                                  "group_norm", "norm", "cosine_similarity", "dist", "pdist", "renorm",
                                  "logsumexp", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear"))
# CUDA's fp32_set_opt_dtype ops run with dtype=float32 (no separate cast of the input).
_SET_DTYPE_CUDA = frozenset(("prod", "softmax", "log_softmax", "cumprod", "cumsum", "sum", "linalg_vector_norm",
                             "linalg_matrix_norm"))
_PROMOTE = frozenset(("cat", "stack", "concat", "concatenate", "index_copy"))
_POLICIES = {"cpu": (_LOWER_CPU, _FP32_CPU, frozenset()), "cuda": (_LOWER_CUDA, _FP32_CUDA, _SET_DTYPE_CUDA)}


def _eligible(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


class Autocast(TorchFunctionMode):
    """torch.autocast(`device`) emulated for meta tensors (see the module docstring)."""

    def __init__(self, device: str = "cpu", cache: bool = True) -> None:
        super().__init__()
        self.cache = cache  # False: as under torch.inference_mode, where autocast caches no cast (measured)
        self.low = getattr(torch, AMP_DTYPES[device])
        self.lower, self.fp32, self.set_dtype = _POLICIES[device]
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(weight) -> (weight, its cast)

    def __exit__(self, *exc: Any) -> Any:
        self._cache.clear()  # autocast drops its cast weights when its region ends
        return super().__exit__(*exc)

    def _cast(self, to: torch.dtype, t: Any) -> Any:
        if not _eligible(t) or t.dtype == to:
            return t
        cached = self.cache and to == self.low and t.dtype == torch.float32 and t.requires_grad and t.is_leaf and not t._is_view()
        if cached and id(t) in self._cache:
            return self._cache[id(t)][1]
        out = t.to(to)
        if cached:
            self._cache[id(t)] = (t, out)
        return out

    def _target(self, name: str, args: tuple, kwargs: dict) -> torch.dtype | None:
        """The dtype the floating arguments of `name` are cast to, or None: the op runs as given."""
        if name in self.lower:
            return self.low
        if name in self.fp32:
            return torch.float32
        if name in _PROMOTE:
            widest = self.low
            for t in tree_flatten((args, kwargs))[0]:
                if _eligible(t):
                    widest = torch.promote_types(widest, t.dtype)
            return widest
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in self.set_dtype and args and _eligible(args[0]) and kwargs.get("dtype") is None:
            return func(*args, **{**kwargs, "dtype": torch.float32})
        to = self._target(name, args, kwargs)
        if to is None:
            return func(*args, **kwargs)
        args, kwargs = tree_map(lambda t: self._cast(to, t), (args, kwargs))
        return func(*args, **kwargs)


def real_autocast(device: str = "cpu") -> Any:
    """torch.autocast for `device` in its AMP_DTYPES dtype: what Autocast emulates, for real tensors."""
    return torch.autocast(device, dtype=getattr(torch, AMP_DTYPES[device]))
