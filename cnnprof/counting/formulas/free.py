"""Ops that only move or reinterpret data, or allocate: zero cost by definition, never reported as uncounted.

The backward of a view (`select_backward`, `slice_backward`: the gradient copied into a zero tensor of the
input's shape) moves data too. `embedding` is here on purpose: a lookup copies rows of its table (as index_select), it computes nothing.
Token models therefore cost their matrix products only, as in torch.utils.flop_counter."""
from __future__ import annotations

from typing import Any

from cnnprof.counting.registry import op_name

FREE_OPS = frozenset("""
view _unsafe_view reshape _reshape_alias permute transpose t expand expand_as squeeze unsqueeze flatten
unflatten split split_with_sizes chunk unbind slice select narrow cat stack clone contiguous detach alias
lift_fresh empty empty_like empty_strided new_empty new_zeros zeros zeros_like ones ones_like full full_like
fill copy _to_copy to as_strided view_as channel_shuffle pixel_shuffle constant_pad_nd pad dropout
feature_dropout alpha_dropout native_dropout identity randn rand normal_ uniform_ zero _local_scalar_dense
roll flip repeat tile index _unsafe_index index_select gather take masked_select embedding
select_scatter slice_scatter diagonal tril triu movedim swapaxes unfold im2col diag_embed repeat_interleave
upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d
_upsample_nearest_exact3d scalar_tensor arange linspace new_full new_ones lift_fresh_copy bernoulli
resize_ set_ _assert_async _assert_tensor_metadata sym_constrain_range_for_size type_as unsafe_split
unsafe_split_with_sizes unsafe_chunk reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d
replication_pad2d replication_pad3d
new_empty_strided select_backward slice_backward diagonal_backward as_strided_scatter
""".split())


# Allocations: on meta, the decompositions of many ops allocate their outputs through these; on a device the
# kernel allocates inside one call, so they are not dispatched calls of their own (not counted as free calls).
ALLOCATIONS = frozenset("empty empty_strided empty_like new_empty new_empty_strided".split())


def is_free(op: Any) -> bool:
    """Whether an op (OpOverload or aten name) only moves, reinterprets or allocates data."""
    name = op_name(op)
    return name in FREE_OPS or name.rstrip("_") in FREE_OPS
