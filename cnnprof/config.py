"""Load and validate architecture configs (YAML, `yaml.safe_load` only) into frozen objects.

A config is stem -> stages -> head (AnyNet-style). `params` are the knobs a user may change with
`--set KEY=VALUE`; values elsewhere may refer to them as "$KEY" or select by them with
`{by: KEY, cases: {VALUE: ...}}`. Builder knobs (width_mult, depth_mult, resolution, ...) are applied
here; every other param is handed to each block whose constructor takes an argument of that name.
This module does not import torch, so `cnnprof list` stays fast.
"""
from __future__ import annotations

import copy
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from cnnprof.errors import ConfigError, ModelSpecError
from cnnprof.models.regnet import generate_stages
from cnnprof.models.rounding import make_divisible  # noqa: F401 - re-exported, older imports use it
from cnnprof.yaml_input import check_bounds, is_finite_number, parse_value, read_yaml, shown, type_words


def _config_dir() -> Path:
    """$CNNPROF_CONFIG_DIR, else the checkout's configs/, else the copy a wheel ships as cnnprof/zoo."""
    if os.environ.get("CNNPROF_CONFIG_DIR"):
        return Path(os.environ["CNNPROF_CONFIG_DIR"])
    checkout = Path(__file__).resolve().parent.parent / "configs"
    return checkout if checkout.is_dir() else Path(__file__).resolve().parent / "zoo"


CONFIG_DIR = _config_dir()

# Knobs every architecture has; the builder applies them (blocks never see them).
BUILDER_PARAMS: dict[str, Any] = {
    "num_classes": 1000,
    "resolution": 224,
    "in_channels": 3,
    "width_mult": 1.0,  # MobileNet's alpha: scales every channel count (see `width_rule`)
    "depth_mult": 1.0,  # EfficientNet's depth coefficient: ceil(depth * depth_mult) blocks per stage
    "width_divisor": 8,  # scaled channel counts are rounded to a multiple of this
}
TOP_KEYS = {"name", "family", "paper", "reference", "description", "aliases", "params", "stem", "stages",
            "generator", "head"}
STEM_KEYS = {"out_channels", "kernel_size", "stride", "padding", "bias", "norm", "activation", "pool",
             "width_rule"}
HEAD_KEYS = {"pool", "pool_size", "norm", "hidden", "activation", "dropout", "bias", "width_rule"}
POOL_KEYS = {"type", "kernel_size", "stride", "padding"}
STAGE_META_KEYS = {"block", "depth", "blocks", "out_channels", "stride", "pool", "width_rule"}
WIDTH_RULES = ("scale", "fixed", "scale_up")
CHANNEL_ARGS = ("expanded_channels",)  # block args that are channel counts, scaled like out_channels


# Bounds on what a config may ask for, so a typo cannot build for hours or overflow a tensor size.
MAX_CHANNELS = 1 << 20  # any channel count, after width_mult
MAX_SPATIAL = 1 << 15  # resolution; kernel sizes, strides and paddings are at most MAX_KERNEL
MAX_KERNEL = 1024
MAX_BLOCKS = 1000  # blocks in one model after depth_mult (ResNet-152 has 50, ResNet-1202 600)
MAX_HIDDEN = 64  # hidden layers of the head
MAX_MULT = 1024.0  # width_mult and depth_mult
MAX_ERROR = 300  # characters of an error message
NORM_NAMES = ("batchnorm", "layernorm", "none")


@dataclass(frozen=True)
class PoolSpec:
    type: str  # "max" | "avg"
    kernel_size: int
    stride: int
    padding: int = 0


@dataclass(frozen=True)
class StemSpec:
    out_channels: int
    kernel_size: int = 3
    stride: int = 2
    padding: int | None = None
    bias: bool = False
    norm: str = "batchnorm"
    activation: str = "relu"
    pool: PoolSpec | None = None


@dataclass(frozen=True)
class BlockSpec:
    block: str
    out_channels: int
    stride: int
    args: tuple[tuple[str, Any], ...]  # explicit constructor arguments from the config
    key: str  # where it came from, for error messages: "stages[2].blocks[0]"


@dataclass(frozen=True)
class StageSpec:
    blocks: tuple[BlockSpec, ...]
    pool: PoolSpec | None = None


@dataclass(frozen=True)
class HeadSpec:
    pool: str | None = "avg"
    pool_size: int = 1
    norm: str | None = None
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    dropout: float = 0.0
    bias: bool = True


@dataclass(frozen=True)
class ModelConfig:
    name: str
    family: str
    paper: str
    reference: str
    description: str
    aliases: tuple[str, ...]
    source: str
    params: tuple[tuple[str, Any], ...]  # all knobs after overrides, builder knobs included
    stem: StemSpec | None
    stages: tuple[StageSpec, ...]
    head: HeadSpec
    block_params: tuple[tuple[str, Any], ...] = field(default=())  # params offered to every block
    referenced_params: frozenset[str] = frozenset()  # params used as "$name" or {by: name}

    def param(self, name: str) -> Any:
        return dict(self.params)[name]

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Default input (N, C, H, W) at the config's resolution."""
        res = self.param("resolution")
        return (1, self.param("in_channels"), res, res)


# ----------------------------------------------------------------------------- zoo index

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")  # zoo aliases
_MODEL_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,100}")  # a model's display name: one short line


def zoo_dir() -> Path:
    """The zoo directory; a missing one (e.g. a mistyped $CNNPROF_CONFIG_DIR) is a one-line error."""
    if not CONFIG_DIR.is_dir():
        origin = " ($CNNPROF_CONFIG_DIR)" if os.environ.get("CNNPROF_CONFIG_DIR") else ""
        raise ConfigError(f"{CONFIG_DIR}{origin}: not a directory of zoo configs")
    return CONFIG_DIR


def _zoo_index() -> tuple[dict[str, Path], dict[str, str]]:
    """(name -> path, lower-case name or alias -> name) for every config in the zoo directory."""
    paths = sorted(zoo_dir().glob("*.yaml"))
    # Keyed on the files' contents (read_yaml caches parsing on content), never on mtimes.
    return _build_index(tuple((p, _alias_list(p)) for p in paths))


def _alias_list(path: Path) -> tuple[str, ...]:
    aliases = read_yaml(path, shared=True).get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and _NAME.fullmatch(a) for a in aliases):
        raise ConfigError(f"{path}: aliases: expected a list of names (letters, digits, _ . + -), "
                          f"got {shown(aliases)}")
    return tuple(aliases)


@lru_cache(maxsize=8)
def _build_index(entries: tuple[tuple[Path, tuple[str, ...]], ...]) -> tuple[dict[str, Path], dict[str, str]]:
    paths: dict[str, Path] = {}
    lookup: dict[str, str] = {}
    for path, aliases in entries:
        name = path.stem
        paths[name] = path
        for key in [name, *aliases]:
            key = key.lower()
            if key in lookup:
                raise ConfigError(f"{path}: name or alias '{key}' is already used by {paths[lookup[key]]}; "
                                  f"every zoo name and alias must be unique")
            lookup[key] = name
    return paths, lookup


def zoo_names() -> list[str]:
    """All zoo model names, sorted."""
    return sorted(_zoo_index()[0])


def zoo_aliases() -> dict[str, str]:
    """alias -> zoo name (names themselves excluded)."""
    return {k: v for k, v in _zoo_index()[1].items() if k != v.lower()}


def resolve_zoo_name(name: str) -> str | None:
    """Canonical zoo name for a name or alias (case-insensitive), or None."""
    return _zoo_index()[1].get(name.lower())


def zoo_path(name: str) -> Path:
    """Config file of a zoo model; unknown names raise with the closest suggestions."""
    canonical = resolve_zoo_name(name)
    if canonical is None:
        raise ModelSpecError(unknown_model_message(name))
    return _zoo_index()[0][canonical]


def unknown_model_message(name: str) -> str:
    """One line: unknown model, with close matches from the zoo (names and aliases)."""
    close = difflib.get_close_matches(name.lower()[:100], list(_zoo_index()[1]), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run 'cnnprof list' for the zoo"
    return f"unknown model {shown(name)} (not a zoo name, a .yaml file or a module:callable){hint}"


def zoo_info() -> list[dict[str, str]]:
    """name, family, paper and description of every zoo model (no torch import)."""
    rows = []
    paths, _ = _zoo_index()
    aliases = zoo_aliases()
    for name in sorted(paths):
        raw = read_yaml(paths[name], shared=True)
        rows.append({
            "model": name,
            "family": str(raw.get("family", "")),
            "paper": str(raw.get("paper", "")),
            "description": str(raw.get("description", "")),
            "aliases": sorted(a for a, n in aliases.items() if n == name),
        })
    return rows


# ----------------------------------------------------------------------------- materialising


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> ModelConfig:
    """Read, override, resolve and validate one config file."""
    path = Path(path)
    return materialize(read_yaml(path), overrides or {}, source=str(path), default_name=path.stem)


def materialize(raw: dict, overrides: Mapping[str, Any], source: str, default_name: str = "model") -> ModelConfig:
    """Turn a parsed YAML mapping (plus --set overrides) into a frozen, validated ModelConfig."""
    v = _Validator(source)
    check_bounds(raw, source)
    check_bounds(dict(overrides), f"{source}: --set")
    v.mapping(raw, "top level")
    v.keys(raw, "", TOP_KEYS)
    raw = copy.deepcopy(raw)
    meta = {k: v.string(raw.get(k, ""), k) for k in ("family", "paper", "reference", "description")}
    name = v.string(raw.get("name", default_name), "name")
    if not _MODEL_NAME.fullmatch(name):
        v.fail("name", f"expected a one-line name of at most 100 characters, got {shown(name)}")
    aliases = raw.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        v.fail("aliases", f"expected a list of names, got {shown(aliases)}")
    declared = raw.get("params") or {}
    v.mapping(declared, "params")
    for key, value in declared.items():
        if not isinstance(key, str) or not key.isidentifier():
            v.fail(f"params.{key}", "param names are identifiers like se_ratio")
        if not (value is None or isinstance(value, (bool, str)) or is_finite_number(value)):
            v.fail(f"params.{key}", f"expected a boolean, a finite number or a string, got {shown(value)}")
    params = {**BUILDER_PARAMS, **declared}
    for key, value in overrides.items():
        _apply_override(v, raw, params, str(key), value)
    for key in ("num_classes", "in_channels"):
        v.integer(params[key], f"params.{key}", 1, MAX_CHANNELS)
    v.integer(params["resolution"], "params.resolution", 1, MAX_SPATIAL)
    v.integer(params["width_divisor"], "params.width_divisor", 1, MAX_KERNEL)
    for key in ("width_mult", "depth_mult"):
        v.number(params[key], f"params.{key}", 0, MAX_MULT, low_open=True)
    referenced: set[str] = set()
    raw = _resolve_refs(v, raw, params, "", referenced)
    if "generator" in raw:
        if "stages" in raw:
            v.fail("generator", "give either 'generator' or 'stages', not both")
        gen = v.mapping(raw["generator"], "generator")
        try:
            raw["stages"] = generate_stages(gen)
        except (TypeError, ValueError, KeyError) as exc:
            v.fail("generator", str(exc))
    if "head" not in raw:
        v.fail("head", "missing; every config needs a head")
    stages = raw.get("stages")
    if not isinstance(stages, list) or not stages:
        v.fail("stages", "must be a non-empty list of stages")
    scale = _Scaler(v, params)
    stem = _stem(v, raw["stem"], scale) if raw.get("stem") is not None else None
    budget = [MAX_BLOCKS]
    return ModelConfig(
        name=name,
        aliases=tuple(aliases),
        source=source,
        params=tuple(params.items()),
        stem=stem,
        stages=tuple(_stage(v, s, i, scale, params["depth_mult"], budget) for i, s in enumerate(stages)),
        head=_head(v, raw["head"], scale),
        block_params=tuple((k, val) for k, val in params.items() if k not in BUILDER_PARAMS),
        referenced_params=frozenset(referenced),
        **meta,
    )


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, typed value): numbers as Python reads them (1e-1, 0.5e0), true/false/yes/no
    booleans, null, [lists]; anything else is a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {shown(text)}: expected KEY=VALUE, e.g. --set width_mult=0.75")
    return key.strip(), parse_value(value)


def _apply_override(v: "_Validator", raw: dict, params: dict, key: str, value: Any) -> None:
    if key in params:
        old = params[key]
        if old is not None and not _same_kind(old, value):
            v.fail(f"params.{key}", f"expected {type_words(old)}, got {shown(value)}")
        params[key] = float(value) if isinstance(old, float) else value
        return
    if "." in key:  # dotted path into the raw config, e.g. stages.2.depth
        node: Any = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = _step(v, node, part, key)
        last = parts[-1]
        if isinstance(node, list):
            _step(v, node, last, key)
            node[int(last)] = value
        elif isinstance(node, dict) and last in node:
            node[last] = value
        else:
            v.fail(key, "no such key in the config")
        return
    settable = sorted(params)
    close = difflib.get_close_matches(key, settable, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    v.fail(shown(key)[1:-1], f"unknown key{hint}; settable: {', '.join(settable)}, or a dotted path like stages.0.depth")


def _same_kind(old: Any, value: Any) -> bool:
    """Whether an override may replace a param's default: bool for bool, int for int, number for float."""
    if isinstance(old, bool) or isinstance(value, bool):
        return isinstance(old, bool) and isinstance(value, bool)
    if isinstance(old, int):
        return isinstance(value, int)
    if isinstance(old, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(old))


def _step(v: "_Validator", node: Any, part: str, key: str) -> Any:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            v.fail(key, f"index {part[:20]} out of range (0..{len(node) - 1})")
        return node[int(part)]
    if isinstance(node, dict) and part in node:
        return node[part]
    v.fail(key, "no such key in the config")


def _resolve_refs(v: "_Validator", node: Any, params: dict, key: str, referenced: set[str]) -> Any:
    """Replace "$param" strings and {by: param, cases: {...}} selections by their values."""
    if isinstance(node, str) and node.startswith("$"):
        name = node[1:]
        if name not in params:
            v.fail(key, f"refers to unknown param {shown(name)}")
        referenced.add(name)
        return params[name]
    if isinstance(node, dict):
        if set(node) == {"by", "cases"}:
            name, cases = node["by"], node["cases"]
            if not isinstance(name, str) or name not in params or not isinstance(cases, dict):
                v.fail(key, f"'by' must name a param and 'cases' be a mapping (got by={shown(name)})")
            if params[name] not in cases:
                allowed = ", ".join(str(c) for c in cases)
                v.fail(f"params.{name}", f"{shown(params[name])} is not supported here; allowed: {allowed}")
            referenced.add(name)
            return _resolve_refs(v, cases[params[name]], params, key, referenced)
        return {k: _resolve_refs(v, val, params, f"{key}.{k}" if key else str(k), referenced)
                for k, val in node.items()}
    if isinstance(node, list):
        return [_resolve_refs(v, val, params, f"{key}[{i}]", referenced) for i, val in enumerate(node)]
    return node


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
