"""Bounded YAML input: config files and override values (KEY=VALUE), parsed safely and never without limit.

Limits: a config file is a regular file of at most MAX_FILE_BYTES; the parsed data may hold at most
MAX_NODES values once aliases are expanded (a "billion laughs" file of nested aliases is rejected after
MAX_NODES steps, not expanded) and be at most MAX_DEPTH containers deep (no RecursionError later).
Parsing is cached on the file's content, so an edited file is re-read even within the same second.
No torch import.
"""
from __future__ import annotations

import copy
import math
import os
import re
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from cnnprof.errors import ConfigError, parameter

MAX_FILE_BYTES = 1 << 20  # zoo configs are ~2 KB
MAX_NODES = 100_000  # values after alias expansion; the largest zoo config has a few hundred
MAX_DEPTH = 64  # nesting of lists and mappings; zoo configs use 5
MAX_SHOWN = 60  # characters of a user's value shown in an error message

# libyaml's C loader when available: the same safe constructor, ~10x faster than the pure-Python one.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[misc, valid-type]
    """The safe loader, but a key given twice in one mapping is an error (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key_node.value[:40]!r} given twice in one mapping", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def shown(value: Any) -> str:
    """repr() of a value, cut to MAX_SHOWN characters, for one-line error messages."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def read_regular(path: str | Path, limit: int, what: str, noun: str, form: str, error: type[Exception]) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. A directory, FIFO or device is refused before it is
    opened (nothing waits on it), and so is a larger file: `error(f"{what}: ...")`, naming a `noun` of `form`."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what}: no such file") from None
    except OSError as exc:
        raise error(f"{what}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a file"
        raise error(f"{what}: is {kind}; a {noun} must be a regular {form} file")
    if info.st_size > limit:
        raise error(f"{what}: file is {info.st_size:,} bytes; {noun}s are limited to {limit:,}")
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after stat(), open() must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"{what}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what}: file is larger than {limit:,} bytes, the limit for {noun}s")
    return data


def read_yaml(path: str | Path, shared: bool = False) -> dict:
    """Parse a config file with the safe loader (plain data only); errors name the file and line.
    shared=True returns the cached object itself (the caller must not modify it), else a copy."""
    path = Path(path)
    data = read_regular(path, MAX_FILE_BYTES, str(path), "config", "YAML", ConfigError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    data = _parse_cached(str(path), text)
    return data if shared else copy.deepcopy(data)


@lru_cache(maxsize=256)
def _parse_cached(source: str, text: str) -> dict:
    """Parse and bound-check YAML text; cached on (name, content)."""
    data = parse_text(text, source)
    if data is None:
        raise ConfigError(f"{source}: file is empty; expected a mapping with 'stages' and 'head'")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_text(text: str, source: str) -> Any:
    """yaml.safe_load with one-line errors, then check_bounds()."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader: no Python object tags
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = (exc.problem or exc.context or "invalid YAML").strip().splitlines()[0]
        if "could not determine a constructor" in str(exc):
            problem = f"YAML tag not allowed ({problem.split('tag')[-1].strip()}); configs hold plain data only"
        raise ConfigError(f"{source}{where}: {problem[:200]}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {str(exc).splitlines()[0][:200]}") from None
    except (ValueError, TypeError) as exc:  # a tagged scalar the constructor rejects, e.g. `!!float x`
        raise ConfigError(f"{source}: invalid YAML value: {str(exc).splitlines()[0][:200]}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply (more than {MAX_DEPTH} levels)") from None
    check_bounds(data, source)
    return data


def check_bounds(data: Any, source: str) -> None:
    """Reject data with more than MAX_NODES values (aliases expanded) or deeper than MAX_DEPTH; iterative."""
    stack = [(data, 0)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ConfigError(f"{source}: more than {MAX_NODES:,} values once YAML aliases are expanded; "
                              f"configs are limited to that size")
        if isinstance(node, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ConfigError(f"{source}: nested too deeply (more than {MAX_DEPTH} levels)")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in items:
                if isinstance(node, dict):
                    stack.append((key, depth + 1))
                stack.append((value, depth + 1))


# ----------------------------------------------------------------------------- --set values

_INT = re.compile(r"[-+]?(0|[1-9][0-9_]*)")
_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def parse_value(text: str) -> Any:
    """An override value as a user writes it: true/false/yes/no/on/off, integers, any float Python reads
    (1e-1, 0.5e0, .5; YAML 1.1 would read the first two as strings), null/~, [lists] and {mappings};
    anything else is the string itself."""
    value = text.strip()
    if not value:
        return ""
    if value.lower() in _BOOLS:
        return _BOOLS[value.lower()]
    if value.lower() in ("null", "~"):  # not "none": activation=none is a name
        return None
    if _INT.fullmatch(value):
        return int(value.replace("_", ""))
    try:
        return float(value)
    except ValueError:
        pass
    if value[0] in "[{":
        try:
            return parse_text(value, f"{parameter('overrides')} value")
        except ConfigError:
            return value
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def type_words(example: Any) -> str:
    """The type of a param's default, in words for error messages: 'a number (float)', 'a boolean'."""
    if isinstance(example, bool):
        return "a boolean (true/false/yes/no)"
    if isinstance(example, int):
        return "an integer"
    if isinstance(example, float):
        return "a number (float)"
    if isinstance(example, str):
        return "a string"
    return f"a value like {shown(example)}"


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite as a float: an integer beyond float range (YAML and JSON
    read 10**400 exactly) is not, as code downstream converts it to a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
