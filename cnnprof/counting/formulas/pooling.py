"""Scope "all": pooling, reductions and interpolation.

- max / avg pooling: k_h x k_w ops per output element; adaptive and global pooling, mean, sum, max,
  min, argmax, all/any: 1 op per input element (max(x, y) of two tensors is element-wise instead).
- interpolation: weighted sum of the 2^d nearest inputs, 2^d MACs per output element (linear 2,
  bilinear 4, trilinear 8); bicubic 4 x 4 = 16 MACs. Nearest-neighbour upsampling is a copy (free).
"""
from __future__ import annotations

from math import prod
from typing import Any

from cnnprof.counting.formulas.common import first, numel, per_element
from cnnprof.counting.registry import Cost, builtin


@builtin("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
         "avg_pool1d", "avg_pool2d", "avg_pool3d")
def pool_cost(input: Any, kernel_size: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """One op per window element per output element; a one-number kernel covers every spatial dim."""
    kernel = [kernel_size] if isinstance(kernel_size, int) else list(kernel_size)
    if len(kernel) == 1:
        kernel = kernel * (input.dim() - 2)
    return Cost("pooling", 0, numel(first(out)) * prod(kernel))


reduce_cost = builtin("adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool3d",
                      "_adaptive_avg_pool3d", "adaptive_max_pool2d", "adaptive_max_pool1d", "mean", "sum", "amax")(
    per_element("reduce_cost", "pooling", ops=1, of="input"))


@builtin("max", "min", "amin", "argmax", "argmin", "prod", "all", "any", "logsumexp")
def reduce_or_binary_cost(input: Any, *rest: Any, out: Any, other: Any = None, **_: Any) -> Cost:
    """max(x) / max(x, dim) reduce (1 op per input element); max(x, other) is element-wise (1 per output)."""
    if other is None and rest:
        other = rest[0]  # called by name, positionally: max(x, y) or max(x, dim)
    if hasattr(other, "numel"):
        return Cost("element-wise", 0, numel(first(out)))
    return Cost("pooling", 0, numel(input))


@builtin("upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d")
def linear_interpolate_cost(input: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """Each output element is a weighted sum of its 2^d nearest inputs (d spatial dimensions)."""
    return Cost("interpolation", 2 ** (out.dim() - 2) * numel(out), 0)


bicubic_cost = builtin("upsample_bicubic2d")(per_element("bicubic_cost", "interpolation", macs=16))
