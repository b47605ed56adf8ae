"""The zoo registry: every YAML config in the zoo directory, by name and alias (no torch import)."""
from __future__ import annotations

import difflib
import os
import re
from functools import lru_cache
from pathlib import Path

from cnnprof.errors import ConfigError, ModelSpecError
from cnnprof.models.yaml_input import read_yaml, shown


def _config_dir() -> Path:
    """$CNNPROF_CONFIG_DIR, else the checkout's configs/, else the copy a wheel ships as cnnprof/zoo."""
    if os.environ.get("CNNPROF_CONFIG_DIR"):
        return Path(os.environ["CNNPROF_CONFIG_DIR"])
    package = Path(__file__).resolve().parent.parent
    checkout = package.parent / "configs"
    return checkout if checkout.is_dir() else package / "zoo"


CONFIG_DIR = _config_dir()

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")  # zoo aliases


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
