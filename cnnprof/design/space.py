"""Design spaces as data: a base config and, per knob, a distribution (pycls's sweep samplers).

    base: regnet_x_400mf            # zoo name or config path (relative to the space file)
    knobs:
      depth: {type: int, low: 12, high: 28}                   # step: 1 unless given
      w_a:   {type: float, low: 8.0, high: 256.0, log: true}  # log-uniform
      group_width: {type: categorical, choices: [1, 2, 4, 8, 16, 32]}
      stages.1.out_channels: {type: categorical, choices: [0.5, 1.0], multiply: true, divisor: 8}

A knob is a param of the base config or a dotted path into it. `multiply: true` scales the base value
(rounded to a multiple of `divisor`, else up). A sample is applied to the raw YAML, so every sample is a
standalone config that `cnnprof flops` rebuilds. No torch or optuna import at module level.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from cnnprof.errors import ConfigError
from cnnprof.models.yaml_input import is_finite_number, shown

SPACE_KEYS = {"name", "description", "base", "knobs"}
KNOB_KEYS = {"type", "low", "high", "step", "log", "choices", "multiply", "divisor"}
TYPES = ("int", "float", "categorical")
# A name from a file or an option (a space's name, a study's) is a label that becomes part of file names
# (search-NAME/, NAME_t0001.yaml): never a path. No separator, no "..", a bounded set of characters.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")
NAME_RULE = "use up to 100 letters, digits, '_', '.', '+' or '-', starting with a letter or digit, without '..'"


@dataclass(frozen=True)
class Knob:
    """One knob's distribution."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    multiply: bool = False
    divisor: int | None = None

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial samples for this knob."""
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def distribution(self) -> Any:
        """The Optuna distribution (for enqueueing or rebuilding trials)."""
        import optuna.distributions as d

        if self.type == "int":
            return d.IntDistribution(int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.type == "float":
            return d.FloatDistribution(self.low, self.high, step=self.step, log=self.log)
        return d.CategoricalDistribution(list(self.choices))


@dataclass(frozen=True)
class Space:
    """A design space: where it came from, the base config's raw YAML and the knobs."""

    name: str
    description: str
    source: str
    base: str
    raw: Mapping[str, Any]
    knobs: tuple[Knob, ...]

    def config_raw(self, sample: Mapping[str, Any]) -> dict:
        """The base YAML with a sample's values applied: a standalone config."""
        raw = copy.deepcopy(dict(self.raw))
        raw.pop("aliases", None)  # a written config must not claim the base model's aliases
        for knob in self.knobs:
            if knob.name in sample:
                _set(raw, knob, sample[knob.name])
        return raw

    def config(self, sample: Mapping[str, Any], name: str | None = None):
        """Materialise a sample into a ModelConfig (raises ConfigError when the sample is invalid)."""
        from cnnprof.models.config import materialize

        raw = self.config_raw(sample)
        if name:
            raw["name"] = name
        return materialize(raw, {}, source=f"{self.source} sample", default_name=self.name)


def load_space(path: str | Path) -> Space:
    """Read and validate a space file; every problem is one line naming the file and the key."""
    from cnnprof.models.config import BUILDER_PARAMS, read_yaml

    path = _space_file(Path(path))
    data = read_yaml(path)
    fail = lambda key, why: ConfigError(f"{path}: {key}: {why}")  # noqa: E731
    extra = set(data) - SPACE_KEYS
    if extra:
        raise fail(sorted(extra)[0], f"unknown key; allowed: {', '.join(sorted(SPACE_KEYS))}")
    base = data.get("base")
    raw = read_yaml(_base_file(fail, path, base))
    knobs_raw = data.get("knobs")
    if not isinstance(knobs_raw, dict) or not knobs_raw:
        raise fail("knobs", "must be a non-empty mapping of knob -> distribution")
    settable = {**BUILDER_PARAMS, **(raw.get("params") or {})}
    knobs = []
    for name, spec in knobs_raw.items():
        key = f"knobs.{name}"
        if not isinstance(name, str) or not name:
            raise fail(f"knobs.{shown(name)}", "a knob's name must be a non-empty string (a param or a dotted path)")
        if name not in settable and _get(raw, name) is _MISSING:
            raise fail(key, f"unknown knob; {base} has params {', '.join(sorted(settable))}, or give a dotted "
                            f"path like stages.1.depth")
        if name not in settable and _get(raw, name) is None:
            _check_new_key(fail, key, raw, str(name))
        name = str(name)
        base_value = settable.get(name) if name in settable else _get(raw, name)
        knobs.append(parse_knob(fail, key, name, spec, base_value))
    return Space(name=_space_name(fail, data.get("name"), path), description=str(data.get("description", "")),
                 source=str(path), base=base, raw=raw, knobs=tuple(knobs))


def name_problem(name: Any) -> str | None:
    """Why `name` cannot be a label that output file names are made of (a path, '..', odd characters), or None."""
    if isinstance(name, str) and NAME.fullmatch(name) and ".." not in name:
        return None
    text = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
    return f"{text} is not a valid name ({NAME_RULE})"


def _space_name(fail, name: Any, path: Path) -> str:
    """The space's `name:`, checked (it names the output directory and the configs), else one made of the file's."""
    if name is None:
        return re.sub(r"[^A-Za-z0-9_.+-]+", "_", path.stem).replace("..", "_").lstrip("_.+-")[:100] or "space"
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)
    problem = name_problem(name)
    if problem:
        raise fail("name", problem)
    return name


def _space_file(path: Path) -> Path:
    """The space file: the path given, else a shipped space of that name (`--space regnet` or regnet.yaml)."""
    if path.is_file():
        return path
    from cnnprof.models.zoo import CONFIG_DIR

    shipped = CONFIG_DIR / "spaces" / f"{path.stem}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise ConfigError(f"{path}: no such space file")


def _base_file(fail, path: Path, base: Any) -> Path:
    """The base config of a space: a YAML file next to the space, or a zoo model."""
    from cnnprof.models.zoo import resolve_zoo_name, zoo_path

    if not isinstance(base, str) or not base:
        raise fail("base", "missing; name a zoo model or a config file")
    base_path = path.parent / base
    if base.lower().endswith((".yaml", ".yml")) and base_path.is_file():
        return base_path
    if resolve_zoo_name(base):
        return zoo_path(base)
    raise fail("base", f"{base!r} is neither a zoo model nor a config file next to the space")


def _check_new_key(fail, key: str, raw: dict, name: str) -> None:
    """A knob that adds a key to a stage (e.g. stages.1.kernel_size) must name an argument of its block."""
    from cnnprof.models.config import STAGE_META_KEYS
    from cnnprof.models.blocks import block_arguments, get_block

    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "stages" or not isinstance(raw.get("stages"), list):
        raise fail(key, "no such key in the base config")
    stage = _get(raw, ".".join(parts[:2]))
    try:
        allowed = block_arguments(get_block(str(stage.get("block")))) | STAGE_META_KEYS
    except KeyError as exc:
        raise fail(key, exc.args[0]) from None
    if parts[2] not in allowed:
        raise fail(key, f"not an argument of block '{stage.get('block')}'; allowed: {', '.join(sorted(allowed))}")


def parse_knob(fail: Callable[[str, str], Exception], key: str, name: str, spec: Any, base_value: Any) -> Knob:
    """One knob's distribution from its mapping in a space file; `base_value` is the base config's value of the
    knob (what `multiply` scales). A problem raises `fail(key, why)`, the key naming the offending field."""
    if not isinstance(spec, dict):
        raise fail(key, f"expected a mapping like {{type: int, low: 1, high: 8}}, got {spec!r}")
    extra = set(spec) - KNOB_KEYS
    if extra:
        raise fail(f"{key}.{sorted(extra)[0]}", f"unknown key; allowed: {', '.join(sorted(KNOB_KEYS))}")
    knob_type = spec.get("type")
    if knob_type not in TYPES:
        raise fail(f"{key}.type", f"{knob_type!r} is not one of {', '.join(TYPES)}")
    multiply, divisor = _scaling(fail, key, spec, base_value)
    if knob_type == "categorical":
        return Knob(name, knob_type, choices=_choices(fail, key, spec, multiply), multiply=multiply, divisor=divisor)
    low, high, step, log = _numeric_range(fail, key, knob_type, spec)
    if knob_type == "float":
        low, high = float(low), float(high)
    return Knob(name, knob_type, low, high, step, log, multiply=multiply, divisor=divisor)


def _scaling(fail, key: str, spec: dict, base_value: Any) -> tuple[bool, int | None]:
    """(multiply, divisor): a multiplier knob needs a numeric base value; a divisor is a positive integer."""
    multiply = _flag(fail, f"{key}.multiply", spec.get("multiply", False))
    divisor = spec.get("divisor")
    if divisor is not None and (not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 1):
        raise fail(f"{key}.divisor", f"expected a positive integer, got {divisor!r}")
    if multiply and (isinstance(base_value, bool) or not isinstance(base_value, (int, float))):
        raise fail(f"{key}.multiply", f"the base value {base_value!r} is not a number")
    return multiply, divisor


def _choices(fail, key: str, spec: dict, multiply: bool) -> tuple[Any, ...]:
    """The choices of a categorical knob: values a study can store (null, booleans, numbers within float range,
    strings), and finite numbers for a multiplier."""
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise fail(f"{key}.choices", "must be a non-empty list")
    if len(set(map(repr, choices))) != len(choices):
        raise fail(f"{key}.choices", "has duplicates")
    for choice in choices:
        if multiply and not is_finite_number(choice):
            raise fail(f"{key}.choices", f"a multiplier must be a finite number, got {shown(choice)}")
        if not (choice is None or isinstance(choice, (bool, str, float)) or is_finite_number(choice)):
            raise fail(f"{key}.choices", f"expected null, booleans, numbers within float range or strings, "
                                         f"got {shown(choice)}")
    return tuple(choices)


def _numeric_range(fail, key: str, knob_type: str, spec: dict) -> tuple[Any, Any, Any, bool]:
    """(low, high, step, log) of an int or float knob, checked: numbers, a non-empty range, a step that fits."""
    low, high, step = spec.get("low"), spec.get("high"), spec.get("step")
    log = _flag(fail, f"{key}.log", spec.get("log", False))
    number = int if knob_type == "int" else (int, float)
    for k, v in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if not is_finite_number(v) or not isinstance(v, number):
            non_finite = isinstance(v, float) and not math.isfinite(v)
            what = "a finite number" if non_finite else "an integer" if knob_type == "int" else "a number"
            raise fail(f"{key}.{k}", f"expected {what}, got {shown(v)}")
    if low >= high:
        raise fail(key, f"empty range: low {low} {'>' if low > high else '='} high {high}"
                        + ("" if low > high else " (a categorical knob takes one value)"))
    if step is not None and (step <= 0 or log):
        raise fail(f"{key}.step", "must be > 0, and cannot be combined with log")
    if log and low <= 0:
        raise fail(f"{key}.low", "a log-uniform range needs low > 0")
    if knob_type == "int" and step and (high - low) % step:
        raise fail(f"{key}.step", f"{high} - {low} is not a multiple of step {step}")
    return low, high, step, log


def _flag(fail, key: str, value: Any) -> bool:
    """A boolean field, read as configs read them: a YAML boolean (true/false/yes/no), never a string."""
    if not isinstance(value, bool):
        raise fail(key, f"expected true or false, got {shown(value)}")
    return value


_MISSING = object()


def _get(raw: Any, dotted: str) -> Any:
    node = raw
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and part == dotted.split(".")[-1] and node is not raw:
            return None  # a new key on an existing mapping (e.g. a stage's kernel_size)
        else:
            return _MISSING
    return node


def _set(raw: dict, knob: Knob, value: Any) -> None:
    from cnnprof.models.config import BUILDER_PARAMS

    if "." not in knob.name:
        params = raw.setdefault("params", {}) or {}
        raw["params"] = params
        base = params.get(knob.name, BUILDER_PARAMS.get(knob.name))
        params[knob.name] = _scaled(knob, base, value)
        return
    *parents, last = knob.name.split(".")
    node: Any = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    node[key] = _scaled(knob, node[key] if knob.multiply else None, value)


def _scaled(knob: Knob, base: Any, value: Any) -> Any:
    if not knob.multiply:
        return value
    from cnnprof.models.rounding import make_divisible

    scaled = base * value
    if knob.divisor:
        return make_divisible(scaled, knob.divisor)
    return max(1, math.ceil(scaled - 1e-9)) if isinstance(base, int) else scaled

