"""Activations ("acts"), pycls's third complexity measure (Radosavovic et al., "Designing Network Design
Spaces", 2020; Dollár et al., "Fast and Accurate Model Scaling", 2021).

acts = the number of output elements of every convolution and linear layer and of every windowed pooling
layer (max / avg pooling with a kernel), summed over one forward pass. Global and adaptive pooling,
norms, activations and element-wise ops add none (pycls's `gap2d_cx` adds no acts). pycls counts one
image; here the batch dimension is part of the output, so acts scale with the batch size like MACs.
Kept torch-free and separate from flops.py so that both the FLOP and the traffic counters can use it.
"""
from __future__ import annotations

from typing import Any

# Cost types of formulas.py that produce acts (conv types all start with "conv " or end with " conv").
_WINDOWED_POOLS = frozenset(("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices",
                             "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
                             "quantized_max_pool1d", "quantized_max_pool2d", "quantized_max_pool3d"))


def counts_acts(op: str, cost_type: str) -> bool:
    """True for the ops whose outputs pycls counts: conv, linear / matmul, windowed pooling."""
    if cost_type == "linear" or cost_type.startswith("conv ") or cost_type.endswith(" conv"):
        return True
    return op.rstrip("_") in _WINDOWED_POOLS


def op_acts(op: str, cost_type: str, out: Any) -> int:
    """Output elements of one op call if it counts toward acts, else 0 (first output of a tuple)."""
    if not counts_acts(op, cost_type):
        return 0
    first = out[0] if isinstance(out, (tuple, list)) else out
    return int(first.numel()) if hasattr(first, "numel") else 0
