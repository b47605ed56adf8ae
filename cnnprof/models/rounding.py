"""Channel rounding shared by the config loader, the RegNet generator and the SE layers (no torch import).

Kept apart so that cnnprof.models.config and cnnprof.models.regnet/layers do not import each other.
"""
from __future__ import annotations


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round to the nearest multiple of divisor, never more than 10% down (torchvision's rule)."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new
