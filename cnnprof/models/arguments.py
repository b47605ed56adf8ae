"""Type and range rules for block constructor arguments, checked before a block is built.

The type comes from the constructor's annotation (`kernel_size: int`, `se_ratio: float`, `bias: bool`,
`padding: int | None`); the range from the argument's name, so a new block argument with a known name
(e.g. another `*_ratio` or `*_channels`) is checked without registering anything. Every failure is a
reason string; the caller adds the block and key. Catches what would otherwise fail only inside
forward (padding 0.5, kernel_size false) or silently change a count (bias "false", se_ratio -0.25).
"""
from __future__ import annotations

import types
import typing

from cnnprof.models.layers import ACTIVATION_ALIASES, ACTIVATIONS, NORMS
from cnnprof.models.yaml_input import is_finite_number

MAX_CHANNELS = 1 << 20  # as cnnprof.models.config.MAX_CHANNELS
MAX_KERNEL = 1024  # as cnnprof.models.config.MAX_KERNEL
MAX_RATIO = 64.0

# name -> (low, high) for integers; None for high means MAX_CHANNELS.
INT_RANGES = {
    "in_channels": (1, MAX_CHANNELS), "out_channels": (1, MAX_CHANNELS), "expanded_channels": (1, MAX_CHANNELS),
    "stride": (1, MAX_KERNEL), "kernel_size": (1, MAX_KERNEL), "padding": (0, MAX_KERNEL),
    "groups": (1, MAX_CHANNELS), "group_width": (1, MAX_CHANNELS), "width_per_group": (1, MAX_CHANNELS),
    "se_divisor": (1, MAX_KERNEL),
}
# name -> (low, high, low excluded, high excluded) for numbers.
FLOAT_RANGES = {
    "bottleneck_ratio": (0.0, MAX_RATIO, True, False), "expand_ratio": (0.0, MAX_RATIO, True, False),
    "mlp_ratio": (0.0, MAX_RATIO, True, False), "se_ratio": (0.0, 1.0, False, True),
    "layer_scale": (0.0, 1e6, False, False),
}
# Ratios that set an inner width: ratio x this argument must give at least one channel.
RATIO_BASE = {"bottleneck_ratio": "out_channels", "mlp_ratio": "out_channels", "expand_ratio": "in_channels"}
ACTIVATION_NAMES = tuple(ACTIVATIONS) + tuple(ACTIVATION_ALIASES)
CHOICES = {
    "activation": ACTIVATION_NAMES, "se_activation": ACTIVATION_NAMES, "se_gate": ACTIVATION_NAMES,
    "pw_activation": ("same", *ACTIVATION_NAMES), "norm": NORMS,
    "se_placement": ("output", "bottleneck"), "se_base": ("in", "mid"),
}
# Blocks whose k x k conv pads k // 2 to keep the size: an even kernel would grow it (and break the residual).
ODD_KERNEL_BLOCKS = {"inverted_residual", "depthwise_separable", "convnext"}


def argument_problem(block: str, name: str, value: object, hint: object, values: dict) -> str | None:
    """Why `value` is not valid for argument `name` of `block` (its annotation `hint`), or None."""
    optional, kind = _kind(hint)
    if value is None:
        ok = optional or kind is None or "none" in CHOICES.get(name, ())  # activation: null is no activation
        return None if ok else f"expected {_words(kind)}, got None"
    if kind is bool and not isinstance(value, bool):
        return f"expected true or false, got {_shown(value)}"
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"expected an integer, got {_shown(value)}"
    if kind is float and not is_finite_number(value):  # 10**400 included: no float holds it
        return f"expected a finite number, got {_shown(value)}"
    if kind is str and not isinstance(value, str):
        return f"expected a string, got {_shown(value)}"
    if isinstance(value, str) and name in CHOICES and value.lower() not in CHOICES[name]:
        return f"{_shown(value)} is not one of {', '.join(CHOICES[name])}"
    if name in INT_RANGES and isinstance(value, int):
        low, high = INT_RANGES[name]
        if not low <= value <= high:
            return f"must be in [{low}, {high:,}], got {_shown(value)}"
        if name == "kernel_size" and block in ODD_KERNEL_BLOCKS and value % 2 == 0:
            return f"must be odd for block '{block}' (it pads kernel_size // 2 to keep the size), got {value}"
    if name in FLOAT_RANGES and isinstance(value, (int, float)):
        low, high, low_open, high_open = FLOAT_RANGES[name]
        if value < low or value > high or (low_open and value == low) or (high_open and value == high):
            return (f"must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, "
                    f"got {_shown(value)}")
        base = values.get(RATIO_BASE.get(name, ""))
        if isinstance(base, int) and not isinstance(base, bool) and not 1 <= int(base * value) <= MAX_CHANNELS:
            return f"{value:g} x {RATIO_BASE[name]}={base} gives {int(base * value)} channels, not 1..{MAX_CHANNELS:,}"
    return None


def _kind(hint: object) -> tuple[bool, type | None]:
    """(None allowed, the one plain type among bool/int/float/str) of an annotation."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    plain = [a for a in args if a in (bool, int, float, str)]
    return type(None) in args, plain[0] if len(plain) == 1 else None


def _words(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
