"""Layer-type taxonomy shared by the params, FLOPs and runtime breakdowns."""
from __future__ import annotations

from typing import Sequence

# Display order of the layer types in every breakdown ("conv KxK" entries sort before the rest).
TYPE_ORDER = ("depthwise conv", "pointwise conv", "grouped conv", "linear", "norm", "SE", "activation",
              "pooling", "element-wise", "other")


def conv_type(in_channels: int, groups: int, kernel: Sequence[int]) -> str:
    """'depthwise conv' (groups == in_channels > 1), 'grouped conv', 'pointwise conv' (1x1) or 'conv KxK'."""
    if groups > 1:
        return "depthwise conv" if groups == in_channels else "grouped conv"
    if all(k == 1 for k in kernel):
        return "pointwise conv"
    return "conv " + "x".join(str(k) for k in kernel)


def type_sort_key(name: str) -> tuple[int, str]:
    """Standard convs first (by kernel), then TYPE_ORDER, then anything else alphabetically."""
    if name.startswith("conv "):
        return (0, f"{int(name.split()[1].split('x')[0]):04d}")
    return (1 + TYPE_ORDER.index(name), "") if name in TYPE_ORDER else (99, name)
