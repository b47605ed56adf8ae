"""The one group-by of every breakdown (by op, type, stage, module): sums of numbers per key, in first-seen order."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

ROOT = "(root)"  # ops run by the model's own forward, outside any child module


def totals(items: Iterable[Any], keys: Callable[[Any], Iterable[str]],
           values: Callable[[Any], Sequence[float]]) -> dict[str, list]:
    """{key: element-wise sums of `values(item)`} over every item and every key `keys(item)` names."""
    acc: dict[str, list] = {}
    for item in items:
        vals = values(item)
        for key in keys(item):
            sums = acc.get(key)
            if sums is None:
                acc[key] = list(vals)
            else:
                for i, v in enumerate(vals):
                    sums[i] += v
    return acc


def stage_of(path: str) -> str:
    """The top-level child (stem, stage1.., head) a module path belongs to; ROOT for the model's own ops."""
    return path.split(".")[0] or ROOT


def in_stage_order(groups: dict[str, Any], module_names: Sequence[str]) -> list[Any]:
    """The values of `groups` (keyed by stage_of) in model order, ROOT last."""
    order = [n for n in module_names if n and "." not in n] + [ROOT]
    return [groups[n] for n in order if n in groups]
