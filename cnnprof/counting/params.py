"""Parameter counts: total, trainable, per stage and per layer type."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cnnprof.counting.source import as_source
from cnnprof.counting.types import module_ancestors, module_type, scoped_type, type_scopes, type_sort_key

@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of one model. Shared parameters are counted once."""

    total: int
    trainable: int
    by_stage: tuple[tuple[str, int], ...]  # top-level child (stem, stage1.., head) -> params
    by_type: tuple[tuple[str, int], ...]  # layer type -> params
    by_module: tuple[tuple[str, int], ...]  # every module path (inclusive counts), in module order

    @property
    def non_trainable(self) -> int:
        return self.total - self.trainable


def count_params(model) -> ParamCount:
    """Count parameters of an nn.Module, or of a source (built on the meta device; see cnnprof.counting.source)."""
    if not isinstance(model, nn.Module):
        model = as_source(model).build("meta")
    seen: set[int] = set()
    total = trainable = 0
    by_stage: dict[str, int] = {}
    by_type: dict[str, int] = {}
    by_module: dict[str, int] = {name: 0 for name, _ in model.named_modules()}
    scopes = type_scopes(model)
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            n = param.numel()
            total += n
            trainable += n if param.requires_grad else 0
            stage = name.split(".")[0] if name else "(root)"
            by_stage[stage] = by_stage.get(stage, 0) + n
            kind = scoped_type(name, scopes) or module_type(module)
            by_type[kind] = by_type.get(kind, 0) + n
            for ancestor in module_ancestors(name):
                by_module[ancestor] += n
    return ParamCount(
        total=total,
        trainable=trainable,
        by_stage=tuple((k, v) for k, v in by_stage.items() if v),
        by_type=tuple(sorted(by_type.items(), key=lambda kv: type_sort_key(kv[0]))),
        by_module=tuple(by_module.items()),
    )
