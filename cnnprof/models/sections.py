"""Validation of one config's sections (stem, stages, head) into frozen specs; errors name file and key."""
from __future__ import annotations

import math
from typing import Any

from cnnprof.errors import ConfigError
from cnnprof.models.rounding import make_divisible
from cnnprof.models.yaml_input import is_finite_number, shown
from cnnprof.models.schema import (STEM_KEYS, HEAD_KEYS, POOL_KEYS, STAGE_META_KEYS, WIDTH_RULES, CHANNEL_ARGS,
    MAX_CHANNELS, MAX_KERNEL, MAX_BLOCKS, MAX_HIDDEN, MAX_ERROR, NORM_NAMES, PoolSpec, StemSpec, BlockSpec,
    StageSpec, HeadSpec)


class _Validator:
    """Type and range checks; raises a one-line ConfigError naming the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, why: str):
        message = f"{self.source}: {key}: {why}" if key else f"{self.source}: {why}"
        raise ConfigError(message if len(message) <= MAX_ERROR else message[:MAX_ERROR - 3] + "...")

    def mapping(self, value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {shown(value)}")
        return value

    def integer(self, value: Any, key: str, low: int = 1, high: int | None = None) -> int:
        """An int (not a bool, not 2.0) in [low, high]."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {shown(value)}")
        if value < low:
            self.fail(key, f"must be {'> 0' if low == 1 else f'>= {low}'}, got {value}")
        if high is not None and value > high:
            self.fail(key, f"must be at most {high:,}, got {shown(value)}")
        return value

    def number(self, value: Any, key: str, low: float, high: float, low_open: bool = False,
               high_open: bool = False) -> float:
        """A finite int or float in the range (open ends where asked)."""
        if not is_finite_number(value):
            what = "a finite number" if isinstance(value, float) else "a number"
            self.fail(key, f"expected {what}, got {shown(value)}")
        if value < low or (low_open and value == low) or value > high or (high_open and value == high):
            self.fail(key, f"must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, "
                           f"got {shown(value)}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {shown(value)}")
        return value

    def string(self, value: Any, key: str, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {shown(value)}")
        return value

    def choice(self, value: Any, key: str, allowed: tuple) -> Any:
        if not isinstance(value, (str, type(None))) or value not in allowed:
            self.fail(key, f"{shown(value)} is not one of {', '.join(map(str, allowed))}")
        return value

    def keys(self, node: dict, key: str, allowed: set) -> None:
        extra = [k for k in node if k not in allowed or not isinstance(k, str)]
        if extra:
            first = sorted(map(str, extra))[0]
            self.fail(f"{key}.{first}" if key else first, f"unknown key; allowed: {', '.join(sorted(allowed))}")


    def names(self, node: dict, key: str) -> None:
        """Keys of a stage or block entry are argument names (the block checks which ones it takes)."""
        bad = sorted(str(k) for k in node if not (isinstance(k, str) and k.isidentifier()))
        if bad:
            self.fail(f"{key}.{shown(bad[0])[1:-1]}", "not an argument name; keys are names like se_ratio")


class _Scaler:
    """Applies width_mult to channel counts according to a width_rule."""

    def __init__(self, v: _Validator, params: dict):
        self.v, self.mult, self.divisor = v, params["width_mult"], params["width_divisor"]

    def __call__(self, channels: Any, key: str, rule: str = "scale") -> int:
        self.v.integer(channels, key, 1, MAX_CHANNELS)
        self.v.choice(rule, f"{key} width_rule", WIDTH_RULES)
        mult = self.mult if rule == "scale" else max(1.0, self.mult) if rule == "scale_up" else 1.0
        scaled = channels if mult == 1.0 else make_divisible(channels * mult, self.divisor)
        if scaled > MAX_CHANNELS:
            self.v.fail(key, f"{channels} x width_mult {mult:g} = {scaled:,} channels, more than the "
                             f"limit of {MAX_CHANNELS:,}")
        return scaled


def _padding(v: _Validator, value: Any, key: str) -> int | None:
    return None if value is None else v.integer(value, key, 0, MAX_KERNEL)


def _pool(v: _Validator, node: Any, key: str) -> PoolSpec | None:
    if node is None:
        return None
    node = v.mapping(node, key)
    v.keys(node, key, POOL_KEYS)
    kernel = v.integer(node.get("kernel_size", 2), f"{key}.kernel_size", 1, MAX_KERNEL)
    padding = v.integer(node.get("padding", 0), f"{key}.padding", 0, MAX_KERNEL)
    if padding > kernel // 2:  # torch's pooling rule; it would fail only when run
        v.fail(f"{key}.padding", f"must be at most half the kernel size ({kernel // 2}), got {padding}")
    return PoolSpec(
        type=v.choice(node.get("type", "max"), f"{key}.type", ("max", "avg")),
        kernel_size=kernel,
        stride=v.integer(node.get("stride", kernel), f"{key}.stride", 1, MAX_KERNEL),
        padding=padding,
    )


def _stem(v: _Validator, node: Any, scale: _Scaler) -> StemSpec:
    node = v.mapping(node, "stem")
    v.keys(node, "stem", STEM_KEYS)
    if "out_channels" not in node:
        v.fail("stem.out_channels", "missing")
    return StemSpec(
        out_channels=scale(node["out_channels"], "stem.out_channels", node.get("width_rule", "scale")),
        kernel_size=v.integer(node.get("kernel_size", 3), "stem.kernel_size", 1, MAX_KERNEL),
        stride=v.integer(node.get("stride", 2), "stem.stride", 1, MAX_KERNEL),
        padding=_padding(v, node.get("padding"), "stem.padding"),
        bias=v.boolean(node.get("bias", False), "stem.bias"),
        norm=v.choice(node.get("norm", "batchnorm"), "stem.norm", NORM_NAMES),
        activation=v.string(node.get("activation", "relu"), "stem.activation", optional=True),
        pool=_pool(v, node.get("pool"), "stem.pool"),
    )


def _stage(v: _Validator, node: Any, index: int, scale: _Scaler, depth_mult: float, budget: list[int]) -> StageSpec:
    key = f"stages[{index}]"
    node = v.mapping(node, key)
    v.names(node, key)
    if "block" not in node:
        v.fail(f"{key}.block", "missing; name a block type (see cnnprof/models/blocks)")
    block = v.string(node["block"], f"{key}.block")
    rule = node.get("width_rule", "scale")
    stage_args = {k: val for k, val in node.items() if k not in STAGE_META_KEYS}
    stride = v.integer(node.get("stride", 1), f"{key}.stride", 1, MAX_KERNEL)
    if "blocks" in node:
        if "depth" in node:
            v.fail(f"{key}.depth", "give either 'depth' or a 'blocks' list, not both")
        entries = node["blocks"]
        if not isinstance(entries, list) or not entries:
            v.fail(f"{key}.blocks", "must be a non-empty list of per-block settings")
        count = len(entries)
    else:
        depth = v.integer(node.get("depth"), f"{key}.depth", 1, MAX_BLOCKS)
        count = math.ceil(depth * depth_mult)
        entries = None
    budget[0] -= count
    if budget[0] < 0:
        v.fail(f"{key}.depth", f"the model would have more than {MAX_BLOCKS:,} blocks (depth x depth_mult "
                               f"{depth_mult:g}); that is the limit")
    blocks = []
    for j in range(count):
        bkey = f"{key}.blocks[{j}]" if entries is not None else key
        entry = v.mapping(entries[j], bkey) if entries is not None else {}
        v.names(entry, bkey)
        args = {**stage_args, **{k: val for k, val in entry.items() if k not in ("out_channels", "stride")}}
        for name in CHANNEL_ARGS:
            if args.get(name) is not None:
                args[name] = scale(args[name], f"{bkey}.{name}", rule)
        out = entry.get("out_channels", node.get("out_channels"))
        if out is None:
            v.fail(f"{bkey}.out_channels", "missing")
        blocks.append(BlockSpec(
            block=block,
            out_channels=scale(out, f"{bkey}.out_channels", rule),
            stride=v.integer(entry.get("stride", stride if j == 0 else 1), f"{bkey}.stride", 1, MAX_KERNEL),
            args=tuple(sorted(args.items())),
            key=bkey,
        ))
    return StageSpec(blocks=tuple(blocks), pool=_pool(v, node.get("pool"), f"{key}.pool"))


def _head(v: _Validator, node: Any, scale: _Scaler) -> HeadSpec:
    node = v.mapping(node, "head")
    v.keys(node, "head", HEAD_KEYS)
    hidden = node.get("hidden") or []
    if not isinstance(hidden, list) or len(hidden) > MAX_HIDDEN:
        v.fail("head.hidden", f"expected a list of at most {MAX_HIDDEN} layer widths, got {shown(hidden)}")
    rule = node.get("width_rule", "fixed")
    pool = node.get("pool", "avg")
    return HeadSpec(
        pool=None if pool is None else v.choice(pool, "head.pool", ("avg", "max")),
        pool_size=v.integer(node.get("pool_size", 1), "head.pool_size", 1, MAX_KERNEL),
        norm=v.choice(node.get("norm"), "head.norm", (None, "none", "layernorm")),
        hidden=tuple(scale(h, f"head.hidden[{i}]", rule) for i, h in enumerate(hidden)),
        activation=v.string(node.get("activation", "relu"), "head.activation", optional=True),
        dropout=float(v.number(node.get("dropout", 0.0), "head.dropout", 0, 1, high_open=True)),
        bias=v.boolean(node.get("bias", True), "head.bias"),
    )
