"""Scope "all": pooling, reductions and interpolation.

- max / avg pooling: k_h x k_w ops per output element; adaptive and global pooling, mean, sum, max,
  min, argmax, all/any: 1 op per input element (max(x, y) of two tensors is element-wise instead).
- interpolation: weighted sum of the 2^d nearest inputs, 2^d MACs per output element (linear 2,
  bilinear 4, trilinear 8); bicubic 4 x 4 = 16 MACs. Nearest-neighbour upsampling is a copy (free).
- antialiased interpolation (`antialias=True`: `_upsample_bilinear2d_aa`, `_upsample_bicubic2d_aa`): the
  filter widens with the downscaling factor. Per axis it spans support = taps x max(1, in/out) inputs
  (taps: 2 bilinear, 4 bicubic; PyTorch's kernel: support = taps/2 x scale on each side of the centre), so
  each output element is a weighted sum of ceil(support_h) x ceil(support_w) inputs, 1 MAC each. Upsampling
  is the plain filter (bicubic 16, bilinear 4); bicubic at half size 8 x 8 = 64. Borders (clipped windows)
  are not discounted.
- grid sampling (`grid_sample`: `grid_sampler_2d` / `_3d`): per output element, bilinear 4 MACs (trilinear
  8), bicubic 16, nearest 0 (a gather, priced as free); the grid's coordinate arithmetic is not counted.
"""
from __future__ import annotations

from math import ceil, prod
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


def _aa_scale(size_in: int, size_out: int, align_corners: bool, scale: Any) -> float:
    """in/out as PyTorch's area_pixel_compute_scale: (in-1)/(out-1) with align_corners, 1/scale when a scale
    factor was given, else in/out."""
    if align_corners:
        return (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    return 1.0 / scale if scale else size_in / size_out


def _aa_cost(name: str, taps: int, filter_name: str):
    """The formula of an antialiased `filter_name` filter of `taps` taps per axis (see the module docstring)."""

    def formula(input: Any, output_size: Any = None, align_corners: bool = False, scales_h: Any = None,
                scales_w: Any = None, *, out: Any, scale_factors: Any = None, **_: Any) -> Cost:
        if isinstance(scales_h, (list, tuple)):  # the `.vec` overload's arguments, by position
            scale_factors = scales_h
        scales = list(scale_factors) if scale_factors else [scales_h, scales_w]
        window = 1
        for axis, scale in zip((-2, -1), scales):
            factor = _aa_scale(input.shape[axis], out.shape[axis], bool(align_corners), scale)
            window *= ceil(taps * max(1.0, factor) - 1e-9)  # the epsilon: 1/(1/3) is 3.0000000000000004
        return Cost("interpolation", window * numel(out), 0)

    formula.__name__ = formula.__qualname__ = name
    formula.__doc__ = f"Antialiased {filter_name}: ceil({taps} x max(1, in/out)) taps per axis, 1 MAC each per output."
    return formula


bilinear_aa_cost = builtin("_upsample_bilinear2d_aa")(_aa_cost("bilinear_aa_cost", 2, "bilinear"))
bicubic_aa_cost = builtin("_upsample_bicubic2d_aa")(_aa_cost("bicubic_aa_cost", 4, "bicubic"))

# grid_sampler's interpolation_mode: 0 bilinear (trilinear in 3-D), 1 nearest, 2 bicubic (2-D only).
_GRID_TAPS = {0: 2, 1: 1, 2: 4}


@builtin("grid_sampler_2d", "grid_sampler_3d", "grid_sampler")
def grid_sample_cost(input: Any, grid: Any, interpolation_mode: int = 0, *_: Any, out: Any, **__: Any) -> Cost:
    """Each output element a weighted sum of taps^d inputs (d spatial dims): bilinear 4, trilinear 8,
    bicubic 16 MACs; nearest picks one input (0 MACs)."""
    taps = _GRID_TAPS.get(int(interpolation_mode), 2)
    macs = 0 if taps == 1 else taps ** (out.dim() - 2) * numel(out)
    return Cost("interpolation", macs, 0)
