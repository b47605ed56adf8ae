"""What the counters take: an nn.Module, or any object that names a model and can build it.

The counting core knows no zoo, config or CLI. A model spec (zoo name, YAML file, `module:callable`) is
resolved by `cnnprof.models.spec.resolve`, whose `ModelSource` has the same four members as
`ModuleSource` here: `label`, `module`, `build(device)`, `inputs(model, given)` and `rebuild(device)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from cnnprof.errors import CnnprofError
from cnnprof.inputs import DEFAULT_INPUT_SHAPE, declared_inputs, normalize


@dataclass(frozen=True)
class ModuleSource:
    """A built nn.Module as a source: counted where it is, never moved, copied or rebuilt."""

    module: nn.Module
    label: str = ""

    def build(self, device: str | None = None) -> nn.Module:
        return self.module

    def inputs(self, model: nn.Module | None, given: Any = None) -> tuple[tuple, dict]:
        """`given`, else what the module declares (`example_inputs()`, ...), else 1x3x224x224."""
        found = normalize(given)
        if found is None:
            found = declared_inputs(self.module)
        return found if found is not None else normalize(DEFAULT_INPUT_SHAPE)

    def rebuild(self, device: str) -> None:
        return None


def as_source(model: Any) -> Any:
    """A source for `model`: an nn.Module is wrapped; an object with `label`, `build` and `inputs` is used as is."""
    if isinstance(model, nn.Module):
        return ModuleSource(model, type(model).__name__)
    if all(hasattr(model, a) for a in ("label", "module", "build", "inputs", "rebuild")):
        return model
    raise CnnprofError(f"expected a torch.nn.Module, got {type(model).__name__} (resolve a model name or file "
                       f"with cnnprof.build_model, or use cnnprof.count_flops, which takes both)")
