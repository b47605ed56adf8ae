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
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from cnnprof.errors import ConfigError, ModelSpecError

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


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round to the nearest multiple of divisor, never more than 10% down (torchvision's rule)."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


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


# ----------------------------------------------------------------------------- YAML loading


# libyaml's C loader when available: the same safe constructor, ~10x faster than the pure-Python one.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> dict:
    """Parse a YAML file with the safe loader (plain data only); errors name the file and line."""
    return copy.deepcopy(_read_yaml_cached(Path(path), _mtime(path)))


def _mtime(path: Path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return -1.0


@lru_cache(maxsize=256)
def _read_yaml_cached(path: Path, mtime: float) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader: no Python object tags
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        if "could not determine a constructor" in str(exc):
            problem = f"YAML tag not allowed ({problem.split('tag')[-1].strip()}); configs hold plain data only"
        raise ConfigError(f"{path}{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        raise ConfigError(f"{path}: file is empty; expected a mapping with 'stages' and 'head'")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- zoo index


@lru_cache(maxsize=1)
def _zoo_index() -> tuple[dict[str, Path], dict[str, str]]:
    """(name -> path, lower-case name or alias -> name) for every config in CONFIG_DIR."""
    paths: dict[str, Path] = {}
    lookup: dict[str, str] = {}
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        name = path.stem
        paths[name] = path
        aliases = read_yaml(path).get("aliases") or []
        if not isinstance(aliases, list):
            raise ConfigError(f"{path}: aliases: expected a list of names, got {aliases!r}")
        for key in [name, *aliases]:
            key = str(key).lower()
            if key in lookup:
                raise ConfigError(f"{path}: name or alias '{key}' is already used by {lookup[key]}")
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
    close = difflib.get_close_matches(name.lower(), list(_zoo_index()[1]), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run 'cnnprof list' for the zoo"
    return f"unknown model '{name}' (not a zoo name, a .yaml file or a module:callable){hint}"


def zoo_info() -> list[dict[str, str]]:
    """name, family, paper and description of every zoo model (no torch import)."""
    rows = []
    paths, _ = _zoo_index()
    aliases = zoo_aliases()
    for name in sorted(paths):
        raw = read_yaml(paths[name])
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
    unknown = set(raw) - TOP_KEYS
    if unknown:
        v.fail(sorted(unknown)[0], f"unknown key; allowed: {', '.join(sorted(TOP_KEYS))}")
    raw = copy.deepcopy(raw)
    if not isinstance(raw.get("aliases", []), list):
        v.fail("aliases", f"expected a list of names, got {raw['aliases']!r}")
    declared = raw.get("params") or {}
    if not isinstance(declared, dict):
        v.fail("params", "must be a mapping of knob names to values")
    params = {**BUILDER_PARAMS, **declared}
    for key, value in overrides.items():
        _apply_override(v, raw, params, key, value)
    for key in BUILDER_PARAMS:
        v.number(params[key], f"params.{key}", positive=True, integer=key not in ("width_mult", "depth_mult"))
    referenced: set[str] = set()
    raw = _resolve_refs(v, raw, params, "", referenced)
    if "generator" in raw:
        from cnnprof.models.regnet import generate_stages

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
    return ModelConfig(
        name=str(raw.get("name", default_name)),
        family=str(raw.get("family", "")),
        paper=str(raw.get("paper", "")),
        reference=str(raw.get("reference", "")),
        description=str(raw.get("description", "")),
        aliases=tuple(str(a) for a in raw.get("aliases") or ()),
        source=source,
        params=tuple(params.items()),
        stem=stem,
        stages=tuple(_stage(v, s, i, scale, params["depth_mult"]) for i, s in enumerate(stages)),
        head=_head(v, raw["head"], scale),
        block_params=tuple((k, val) for k, val in params.items() if k not in BUILDER_PARAMS),
        referenced_params=frozenset(referenced),
    )


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, YAML-typed value); '0.75' is a float, 'true' a bool, 'relu' a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set width_mult=0.75")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _apply_override(v: "_Validator", raw: dict, params: dict, key: str, value: Any) -> None:
    if key in params:
        old = params[key]
        if isinstance(old, bool) != isinstance(value, bool) or (
            isinstance(old, (int, float)) and not isinstance(value, (int, float))
        ):
            v.fail(f"params.{key}", f"expected a value like {old!r}, got {value!r}")
        params[key] = float(value) if isinstance(old, float) and not isinstance(value, bool) else value
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
    v.fail(key, f"unknown key{hint}; settable: {', '.join(settable)}, or a dotted path like stages.0.depth")


def _step(v: "_Validator", node: Any, part: str, key: str) -> Any:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            v.fail(key, f"index {part} out of range (0..{len(node) - 1})")
        return node[int(part)]
    if isinstance(node, dict) and part in node:
        return node[part]
    v.fail(key, "no such key in the config")


def _resolve_refs(v: "_Validator", node: Any, params: dict, key: str, referenced: set[str]) -> Any:
    """Replace "$param" strings and {by: param, cases: {...}} selections by their values."""
    if isinstance(node, str) and node.startswith("$"):
        name = node[1:]
        if name not in params:
            v.fail(key, f"refers to unknown param '{name}'")
        referenced.add(name)
        return params[name]
    if isinstance(node, dict):
        if set(node) == {"by", "cases"}:
            name, cases = node["by"], node["cases"]
            if name not in params or not isinstance(cases, dict):
                v.fail(key, f"'by' must name a param and 'cases' be a mapping (got by={name!r})")
            if params[name] not in cases:
                allowed = ", ".join(str(c) for c in cases)
                v.fail(f"params.{name}", f"{params[name]!r} is not supported here; allowed: {allowed}")
            referenced.add(name)
            return _resolve_refs(v, cases[params[name]], params, key, referenced)
        return {k: _resolve_refs(v, val, params, f"{key}.{k}" if key else str(k), referenced)
                for k, val in node.items()}
    if isinstance(node, list):
        return [_resolve_refs(v, val, params, f"{key}[{i}]", referenced) for i, val in enumerate(node)]
    return node


class _Validator:
    """Raises ConfigError naming the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, why: str):
        raise ConfigError(f"{self.source}: {key}: {why}")

    def mapping(self, value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {value!r}")
        return value

    def number(self, value: Any, key: str, positive: bool = False, integer: bool = True, minimum: float | None = None):
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            self.fail(key, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        if positive and value <= 0:
            self.fail(key, f"must be > 0, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value!r}")
        return value

    def choice(self, value: Any, key: str, allowed: tuple) -> Any:
        if value not in allowed:
            self.fail(key, f"{value!r} is not one of {', '.join(map(str, allowed))}")
        return value

    def keys(self, node: dict, key: str, allowed: set) -> None:
        extra = set(node) - allowed
        if extra:
            self.fail(f"{key}.{sorted(extra)[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


class _Scaler:
    """Applies width_mult to channel counts according to a width_rule."""

    def __init__(self, v: _Validator, params: dict):
        self.v, self.mult, self.divisor = v, params["width_mult"], params["width_divisor"]

    def __call__(self, channels: Any, key: str, rule: str = "scale") -> int:
        self.v.number(channels, key, positive=True)
        self.v.choice(rule, f"{key} width_rule", WIDTH_RULES)
        mult = self.mult if rule == "scale" else max(1.0, self.mult) if rule == "scale_up" else 1.0
        return channels if mult == 1.0 else make_divisible(channels * mult, self.divisor)


def _pool(v: _Validator, node: Any, key: str) -> PoolSpec | None:
    if node is None:
        return None
    node = v.mapping(node, key)
    v.keys(node, key, POOL_KEYS)
    kernel = v.number(node.get("kernel_size", 2), f"{key}.kernel_size", positive=True)
    return PoolSpec(
        type=v.choice(node.get("type", "max"), f"{key}.type", ("max", "avg")),
        kernel_size=kernel,
        stride=v.number(node.get("stride", kernel), f"{key}.stride", positive=True),
        padding=v.number(node.get("padding", 0), f"{key}.padding", minimum=0),
    )


def _stem(v: _Validator, node: Any, scale: _Scaler) -> StemSpec:
    node = v.mapping(node, "stem")
    v.keys(node, "stem", STEM_KEYS)
    if "out_channels" not in node:
        v.fail("stem.out_channels", "missing")
    return StemSpec(
        out_channels=scale(node["out_channels"], "stem.out_channels", node.get("width_rule", "scale")),
        kernel_size=v.number(node.get("kernel_size", 3), "stem.kernel_size", positive=True),
        stride=v.number(node.get("stride", 2), "stem.stride", positive=True),
        padding=None if node.get("padding") is None else v.number(node["padding"], "stem.padding", minimum=0),
        bias=bool(node.get("bias", False)),
        norm=str(node.get("norm", "batchnorm")),
        activation=str(node.get("activation", "relu")),
        pool=_pool(v, node.get("pool"), "stem.pool"),
    )


def _stage(v: _Validator, node: Any, index: int, scale: _Scaler, depth_mult: float) -> StageSpec:
    key = f"stages[{index}]"
    node = v.mapping(node, key)
    if "block" not in node:
        v.fail(f"{key}.block", "missing; name a block type (see cnnprof/models/blocks)")
    rule = node.get("width_rule", "scale")
    stage_args = {k: val for k, val in node.items() if k not in STAGE_META_KEYS}
    stride = v.number(node.get("stride", 1), f"{key}.stride", positive=True)
    if "blocks" in node:
        if "depth" in node:
            v.fail(f"{key}.depth", "give either 'depth' or a 'blocks' list, not both")
        entries = node["blocks"]
        if not isinstance(entries, list) or not entries:
            v.fail(f"{key}.blocks", "must be a non-empty list of per-block settings")
    else:
        depth = v.number(node.get("depth"), f"{key}.depth", positive=True)
        entries = [{}] * math.ceil(depth * depth_mult)
    blocks = []
    for j, entry in enumerate(entries):
        bkey = f"{key}.blocks[{j}]" if "blocks" in node else key
        entry = v.mapping(entry, bkey)
        args = {**stage_args, **{k: val for k, val in entry.items() if k not in ("out_channels", "stride")}}
        for name in CHANNEL_ARGS:
            if args.get(name) is not None:
                args[name] = scale(args[name], f"{bkey}.{name}", rule)
        out = entry.get("out_channels", node.get("out_channels"))
        if out is None:
            v.fail(f"{bkey}.out_channels", "missing")
        blocks.append(BlockSpec(
            block=str(node["block"]),
            out_channels=scale(out, f"{bkey}.out_channels", rule),
            stride=v.number(entry.get("stride", stride if j == 0 else 1), f"{bkey}.stride", positive=True),
            args=tuple(sorted(args.items())),
            key=bkey,
        ))
    return StageSpec(blocks=tuple(blocks), pool=_pool(v, node.get("pool"), f"{key}.pool"))


def _head(v: _Validator, node: Any, scale: _Scaler) -> HeadSpec:
    node = v.mapping(node, "head")
    v.keys(node, "head", HEAD_KEYS)
    hidden = node.get("hidden") or []
    if not isinstance(hidden, list):
        v.fail("head.hidden", f"expected a list of layer widths, got {hidden!r}")
    rule = node.get("width_rule", "fixed")
    dropout = v.number(node.get("dropout", 0.0), "head.dropout", integer=False, minimum=0)
    if dropout >= 1:
        v.fail("head.dropout", f"must be < 1, got {dropout}")
    return HeadSpec(
        pool=None if node.get("pool", "avg") is None else v.choice(node.get("pool", "avg"), "head.pool", ("avg", "max")),
        pool_size=v.number(node.get("pool_size", 1), "head.pool_size", positive=True),
        norm=v.choice(node.get("norm"), "head.norm", (None, "none", "layernorm")),
        hidden=tuple(scale(h, f"head.hidden[{i}]", rule) for i, h in enumerate(hidden)),
        activation=str(node.get("activation", "relu")),
        dropout=float(dropout),
        bias=bool(node.get("bias", True)),
    )
