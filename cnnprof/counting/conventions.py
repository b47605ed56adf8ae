"""FLOP conventions (no torch import): MACs are counted internally and converted only here.

  macc   : 1 multiply-accumulate = 1 FLOP (most papers)
  nvidia : 1 multiply-accumulate = 2 FLOPs (NVIDIA, torch.utils.flop_counter)
Other elementary ops (scope "all": activations, additions, comparisons) count 1 FLOP in both.
"""
from __future__ import annotations

from cnnprof.errors import CnnprofError

CONVENTIONS = ("macc", "nvidia")
MAC_FLOPS = {"macc": 1, "nvidia": 2}


def to_flops(macs: float, ops: float, convention: str = "macc") -> float:
    """FLOPs of `macs` multiply-accumulates plus `ops` other ops under a convention."""
    if convention not in MAC_FLOPS:
        raise CnnprofError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    return MAC_FLOPS[convention] * macs + ops
