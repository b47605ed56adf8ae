"""Detection post-processing: data-dependent ops, counted as they ran (e.g. on a real CPU pass).

- nonzero: 1 op (a comparison) per input element.
- sort: n x ceil(log2 n) comparisons per sorted row of n; unique: a sort plus 1 op per element;
  topk: n x max(1, ceil(log2 k)) per row (a k-heap).
- nms (torchvision): sort the N scores, 3 ops per box area, then 13 ops per box pair for IoU and
  threshold (4 min/max, 2 x (subtract, clamp), product, union add and subtract, divide, compare),
  all N(N-1)/2 pairs: an upper bound, the kernel skips boxes already suppressed.
- roi_align (torchvision): s x s bilinear samples per output element (4 MACs each) and 1 op for the
  average (s = sampling_ratio; an adaptive ratio depends on box sizes and is counted as 1).
torchvision's ops are registered by "torchvision::name" (torchvision is not a dependency): their
arguments are bound by torchvision's schema once it is loaded.
"""
from __future__ import annotations

from math import ceil, log2
from typing import Any

from cnnprof.counting.formulas.common import numel, per_element
from cnnprof.counting.registry import Cost, builtin


def sort_ops(n: int) -> int:
    """Comparisons of a comparison sort of n elements."""
    return n * ceil(log2(n)) if n > 1 else 0


def rows(x: Any, dim: int) -> tuple[int, int]:
    """(rows, length) of `x` along `dim`."""
    n = x.shape[dim] if x.dim() else 1
    return (numel(x) // n if n else 0), n


nonzero_cost = builtin("nonzero")(per_element("nonzero_cost", "selection", ops=1, of="input"))


@builtin("sort")
def sort_cost(input: Any, dim: int = -1, *_: Any, out: Any, **__: Any) -> Cost:
    """sort(x, dim=-1, descending=False): a comparison sort of every row."""
    count, n = rows(input, dim)
    return Cost("selection", 0, count * sort_ops(n))


@builtin("topk")
def topk_cost(input: Any, k: int, dim: int = -1, *_: Any, out: Any, **__: Any) -> Cost:
    """topk(x, k, dim=-1): every element of a row passes a k-element heap."""
    count, n = rows(input, dim)
    return Cost("selection", 0, count * n * max(1, ceil(log2(k)) if k > 1 else 1))


@builtin("_unique2", "_unique", "unique_dim")
def unique_cost(input: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """torch.unique: sort all elements, then one scan."""
    n = numel(input)
    return Cost("selection", 0, sort_ops(n) + n)


@builtin("torchvision::nms")
def nms_cost(dets: Any, scores: Any, iou_threshold: float, *, out: Any, **_: Any) -> Cost:
    """Sort, areas, then IoU and threshold of every pair (see the module docstring)."""
    n = dets.shape[0]
    return Cost("selection", 0, sort_ops(n) + 3 * n + 13 * n * (n - 1) // 2)


@builtin("torchvision::roi_align")
def roi_align_cost(input: Any, rois: Any, spatial_scale: float, pooled_height: int, pooled_width: int,
                   sampling_ratio: int = -1, aligned: bool = False, *, out: Any, **_: Any) -> Cost:
    """sampling_ratio^2 bilinear samples of 4 MACs per output element, plus their average."""
    samples = sampling_ratio * sampling_ratio if sampling_ratio > 0 else 1
    n = numel(out)
    return Cost("pooling", 4 * samples * n, n)
