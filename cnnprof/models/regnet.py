"""RegNet design space -> AnyNet stages (Radosavovic et al., "Designing Network Design Spaces", CVPR 2020).

Pure arithmetic (no torch): a config's `generator: {type: regnet, ...}` becomes its `stages` list,
exactly as torchvision's BlockParams.from_init_params quantises widths.
"""
from __future__ import annotations

import math

from cnnprof.models.rounding import make_divisible
from cnnprof.models.yaml_input import is_finite_number

QUANT = 8  # stage widths are multiples of 8
STRIDE = 2  # every stage halves the resolution
GENERATOR_KEYS = {"type", "depth", "w_0", "w_a", "w_m", "group_width", "bottleneck_ratio", "block", "block_args"}


MAX_DEPTH = 1000  # blocks (config.MAX_BLOCKS)
MAX_WIDTH = 1 << 20  # w_0 and the widths it grows to (config.MAX_CHANNELS)


def _number(gen: dict, key: str, integer: bool, default=None):
    """gen[key] as a finite int (not bool) or number; ValueError naming the key otherwise."""
    value = gen.get(key, default)
    if value is None:
        raise ValueError(f"{key}: missing")
    kind = int if integer else (int, float)
    if not isinstance(value, kind) or not is_finite_number(value):  # 10**400 included: no float holds it
        raise ValueError(f"{key}: expected {'an integer' if integer else 'a finite number'}, got {value!r:.60}")
    return value


def regnet_widths(depth: int, w_0: int, w_a: float, w_m: float) -> tuple[list[int], list[int]]:
    """Per-stage widths and depths of the quantised linear width rule u_j = w_0 + w_a * j."""
    if depth > MAX_DEPTH or w_0 > MAX_WIDTH or w_a > MAX_WIDTH or w_m > MAX_WIDTH:
        raise ValueError(f"RegNet settings too large: depth <= {MAX_DEPTH}, w_0, w_a and w_m <= {MAX_WIDTH} "
                         f"(got depth={depth}, w_0={w_0}, w_a={w_a}, w_m={w_m})")
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
        raise ValueError(f"unknown key {sorted(map(str, extra))[0]!r}; allowed: {', '.join(sorted(GENERATOR_KEYS))}")
    widths, depths = regnet_widths(_number(gen, "depth", True), _number(gen, "w_0", True),
                                   _number(gen, "w_a", False), _number(gen, "w_m", False))
    ratio = float(_number(gen, "bottleneck_ratio", False, 1.0))
    if ratio <= 0:
        raise ValueError(f"bottleneck_ratio: must be > 0, got {ratio}")
    if _number(gen, "group_width", True) < 1:
        raise ValueError(f"group_width: must be > 0, got {gen['group_width']}")
    if not isinstance(gen.get("block", "bottleneck"), str) or not isinstance(gen.get("block_args") or {}, dict):
        raise ValueError("block must be a block name and block_args a mapping of its arguments")
    stages = []
    for width, depth in zip(widths, depths):
        # Make the bottleneck width a multiple of the group width (torchvision's compatibility fix).
        w_bot = int(width * ratio)
        if w_bot < 1 or width * ratio > MAX_WIDTH:
            raise ValueError(f"bottleneck_ratio {ratio:g} x width {width} gives no usable bottleneck width")
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
