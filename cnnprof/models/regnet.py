"""RegNet design space -> AnyNet stages (Radosavovic et al., "Designing Network Design Spaces", CVPR 2020).

Pure arithmetic (no torch): a config's `generator: {type: regnet, ...}` becomes its `stages` list,
exactly as torchvision's BlockParams.from_init_params quantises widths.
"""
from __future__ import annotations

import math

from cnnprof.config import make_divisible

QUANT = 8  # stage widths are multiples of 8
STRIDE = 2  # every stage halves the resolution
GENERATOR_KEYS = {"type", "depth", "w_0", "w_a", "w_m", "group_width", "bottleneck_ratio", "block", "block_args"}


def regnet_widths(depth: int, w_0: int, w_a: float, w_m: float) -> tuple[list[int], list[int]]:
    """Per-stage widths and depths of the quantised linear width rule u_j = w_0 + w_a * j."""
    if w_a < 0 or w_0 <= 0 or w_m <= 1 or w_0 % QUANT != 0 or depth <= 0:
        raise ValueError(f"invalid RegNet settings: need depth > 0, w_a >= 0, w_0 > 0 and a multiple of "
                         f"{QUANT}, w_m > 1 (got depth={depth}, w_0={w_0}, w_a={w_a}, w_m={w_m})")
    block_widths = []
    for j in range(depth):
        capacity = round(math.log((j * w_a + w_0) / w_0) / math.log(w_m))
        block_widths.append(int(round(w_0 * w_m**capacity / QUANT) * QUANT))
    widths, depths = [], []
    for w in block_widths:
        if widths and widths[-1] == w:
            depths[-1] += 1
        else:
            widths.append(w)
            depths.append(1)
    return widths, depths


def generate_stages(gen: dict) -> list[dict]:
    """Expand a regnet generator mapping into AnyNet stage mappings."""
    if gen.get("type") != "regnet":
        raise ValueError(f"unknown generator type {gen.get('type')!r}; available: regnet")
    extra = set(gen) - GENERATOR_KEYS
    if extra:
        raise ValueError(f"unknown key {sorted(extra)[0]!r}; allowed: {', '.join(sorted(GENERATOR_KEYS))}")
    widths, depths = regnet_widths(gen["depth"], gen["w_0"], gen["w_a"], gen["w_m"])
    ratio = float(gen.get("bottleneck_ratio", 1.0))
    stages = []
    for width, depth in zip(widths, depths):
        # Make the bottleneck width a multiple of the group width (torchvision's compatibility fix).
        w_bot = int(width * ratio)
        group_width = min(gen["group_width"], w_bot)
        w_bot = make_divisible(w_bot, group_width)
        stages.append({
            "block": gen.get("block", "bottleneck"),
            "depth": depth,
            "out_channels": int(w_bot / ratio),
            "stride": STRIDE,
            "group_width": group_width,
            "bottleneck_ratio": ratio,
            **(gen.get("block_args") or {}),
        })
    return stages
