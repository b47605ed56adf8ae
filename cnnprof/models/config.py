"""Load and validate architecture configs (YAML, `yaml.safe_load` only) into frozen objects.

A config is stem -> stages -> head (AnyNet-style). `params` are the knobs a user may change with
`overrides` (KEY=VALUE on the command line); values elsewhere may refer to them as "$KEY" or select by them with
`{by: KEY, cases: {VALUE: ...}}`. Builder knobs (width_mult, depth_mult, resolution, ...) are applied
here; every other param is handed to each block whose constructor takes an argument of that name.
The config objects and bounds are in cnnprof.models.schema, the section checks in cnnprof.models.sections.
This module does not import torch, so `cnnprof list` stays fast.
"""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Mapping

from cnnprof.errors import ConfigError, parameter
from cnnprof.models.regnet import generate_stages
from cnnprof.models.schema import (  # noqa: F401 - HeadSpec, PoolSpec, STAGE_META_KEYS re-exported
    _MODEL_NAME, BUILDER_PARAMS, MAX_BLOCKS, MAX_CHANNELS, MAX_KERNEL, MAX_MULT, MAX_SPATIAL, STAGE_META_KEYS, TOP_KEYS,
    HeadSpec, ModelConfig, PoolSpec)
from cnnprof.models.sections import _Scaler, _Validator, _head, _stage, _stem
from cnnprof.models.yaml_input import check_bounds, is_finite_number, parse_value, read_yaml, shown, type_words


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
        raise ConfigError(f"{parameter('overrides', shown(text))}: expected KEY=VALUE, e.g. "
                          f"{parameter('overrides', 'width_mult=0.75')}")
    return key.strip(), parse_value(value)


def _apply_override(v: "_Validator", raw: dict, params: dict, key: str, value: Any) -> None:
    if key in params:
        old = params[key]
        if old is not None and not _same_kind(old, value):
            v.fail(f"params.{key}", f"expected {type_words(old)}, got {shown(value)}")
        if isinstance(old, float) and not (value is None or is_finite_number(value)):
            v.fail(f"params.{key}", f"expected a finite number, got {shown(value)}")  # 10**400: no float
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
