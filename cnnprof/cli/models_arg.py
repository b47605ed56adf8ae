"""Per-model settings on the command line: `MODEL@key=value,key=value,label=NAME`.

Why `@`: it is plain text in bash, zsh and fish (no globbing, no quoting needed), unlike
`resnet50[width_mult=0.5]`, which zsh rejects ("no matches found") and bash expands when a file
matches. Per-model settings override the run-wide `--set`; `label=` names the row.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from cnnprof.errors import CnnprofError

_SETTINGS = re.compile(r"^(?P<spec>.+?)@(?P<settings>[A-Za-z_][\w.]*=.*)$", re.S)
_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w.]*=)")  # commas that start a new key=value (values may hold commas)


@dataclass(frozen=True)
class ModelArg:
    """One MODEL argument: the spec, its own settings (raw text and parsed) and an optional label."""

    text: str
    spec: str
    settings: tuple[tuple[str, str], ...] = ()  # (key, value as typed), in order
    label: str | None = None
    run_wide: tuple[tuple[str, str], ...] = field(default=())  # the run's --set, as typed

    def overrides(self) -> dict[str, Any]:
        """Effective config overrides: the run-wide --set, then this model's own settings."""
        from cnnprof.models.config import parse_override

        return dict(parse_override(f"{k}={v}") for k, v in (*self.run_wide, *self.settings))

    def own_overrides(self) -> dict[str, Any]:
        from cnnprof.models.config import parse_override

        return dict(parse_override(f"{k}={v}") for k, v in self.settings)

    def display(self, base: str) -> str:
        """Row label: the label= given, else the model's name plus every setting that applies to it."""
        if self.label:
            return self.label
        merged = dict(self.run_wide)
        merged.update(self.settings)
        return base + ("@" + ",".join(f"{k}={v}" for k, v in merged.items()) if merged else "")


def _pairs(items: list[str], where: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CnnprofError(f"{where} {item!r}: expected KEY=VALUE, e.g. width_mult=0.75")
        pairs.append((key.strip(), value.strip()))
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:  # the last would win silently: refuse, as a key given twice in a YAML config is
            raise CnnprofError(f"{where} key {key!r} is given twice; give each key once")
        seen.add(key)
    return pairs


def parse_model_arg(text: str, run_wide: list[str] | None = None) -> ModelArg:
    """'resnet50@width_mult=0.5,label=half' -> ModelArg; a plain spec has no settings."""
    run = tuple(_pairs(run_wide or [], "--set"))
    m = _SETTINGS.match(text.strip())
    if not m:
        return ModelArg(text=text, spec=text.strip(), run_wide=run)
    pairs = _pairs([s for s in _SPLIT.split(m["settings"])], f"{m['spec']}@")
    label = next((v for k, v in pairs if k == "label"), None)
    if label is not None and not label:
        raise CnnprofError(f"{text!r}: label= needs a name")
    settings = tuple((k, v) for k, v in pairs if k != "label")
    return ModelArg(text=text, spec=m["spec"], settings=settings, label=label, run_wide=run)


def resolve_arg(arg: ModelArg, label: str | None = None):
    """ModelSource for one MODEL argument with its effective overrides and row label. A run-wide --set
    key that this model does not have is an error naming the model and the per-model way out."""
    from cnnprof.models.spec import resolve

    try:
        source = resolve(arg.spec, arg.overrides())
    except CnnprofError as exc:
        if not arg.run_wide or not _resolves(arg, {}):
            raise
        own = {k for k, _ in arg.settings}
        # Keys this model does not have; a bad value for a key it has keeps the loader's own message.
        culprits = [f"{k}={v}" for k, v in arg.run_wide
                    if k not in own and _missing(_error(arg, dict([_parse(k, v)])))]
        if not culprits:
            raise
        raise CnnprofError(f"{arg.spec}: run-wide --set {' '.join(culprits)} does not apply to this model ({exc}); "
                           f"set it only on the models that have it, as MODEL@{culprits[0]}") from None
    name = label or arg.display(source.label)
    return replace(source, label=name)


def _parse(key: str, value: str):
    from cnnprof.models.config import parse_override

    return parse_override(f"{key}={value}")


def _error(arg: ModelArg, extra: dict[str, Any]) -> CnnprofError | None:
    """The error of resolving the model with its own settings plus `extra` (None: it resolves)."""
    from cnnprof.models.spec import resolve

    try:
        resolve(arg.spec, {**extra, **arg.own_overrides()})
    except CnnprofError as exc:
        return exc
    return None


def _resolves(arg: ModelArg, extra: dict[str, Any]) -> bool:
    """Whether the model resolves with its own settings plus `extra` (to find the run-wide key to blame)."""
    return _error(arg, extra) is None


_MISSING = ("unknown key", "no such key", "unexpected keyword")


def _missing(exc: CnnprofError | None) -> bool:
    """True when `exc` says the model has no such setting (config key, dotted path or factory keyword)."""
    return exc is not None and any(words in str(exc) for words in _MISSING)
