"""Parameter counts: total, trainable, per stage and per layer type."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cnnprof.counting.group import stage_of, totals
from cnnprof.counting.source import as_source
from cnnprof.counting.state import check_initialised
from cnnprof.results import Printable
from cnnprof.counting.types import module_ancestors, module_type, scoped_type, type_scopes, type_sort_key

@dataclass(frozen=True)
class ParamCount(Printable):
    """Parameter counts of one model. Shared parameters are counted once; prints as `cnnprof params`."""

    total: int
    trainable: int
    by_stage: tuple[tuple[str, int], ...]  # top-level child (stem, stage1.., head) -> params
    by_type: tuple[tuple[str, int], ...]  # layer type -> params
    by_module: tuple[tuple[str, int], ...]  # every module path (inclusive counts), in module order
    model: str = ""  # the model's label (its class name for a module)

    @property
    def non_trainable(self) -> int:
        return self.total - self.trainable


def _owned(model: nn.Module) -> list[tuple[str, nn.Module, int, bool]]:
    """(module path, module, elements, trainable) of every parameter, each counted once (by its first owner)."""
    seen: set[int] = set()
    owned = []
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                owned.append((name, module, param.numel(), param.requires_grad))
    return owned


def count_params(model, label: str | None = None) -> ParamCount:
    """Count parameters of an nn.Module, or of a source (built on the meta device; see cnnprof.counting.source)."""
    if not isinstance(model, nn.Module):
        source = as_source(model)
        label, model = label or source.label, source.build("meta")
    check_initialised(label or type(model).__name__, model)
    owned = _owned(model)
    scopes = type_scopes(model)
    size = lambda o: (o[2],)  # noqa: E731
    by_stage = totals(owned, lambda o: (stage_of(o[0]),), size)
    by_type = totals(owned, lambda o: (scoped_type(o[0], scopes) or module_type(o[1]),), size)
    inclusive = totals(owned, lambda o: module_ancestors(o[0]), size)
    return ParamCount(
        total=sum(o[2] for o in owned),
        trainable=sum(o[2] for o in owned if o[3]),
        by_stage=tuple((k, v[0]) for k, v in by_stage.items() if v[0]),
        by_type=tuple(sorted(((k, v[0]) for k, v in by_type.items()), key=lambda kv: type_sort_key(kv[0]))),
        by_module=tuple((name, inclusive.get(name, [0])[0]) for name, _ in model.named_modules()),
        model=label or type(model).__name__,
    )
