"""Parameter counts: total, trainable, per stage and per layer type.

Quantized modules (torch.ao.quantization) keep their weights and biases in packed params (a ScriptObject such
as `Conv2dPackedParamsBase`), not as nn.Parameters: they are unpacked and counted as parameters of the module
holding them, by their element counts (an int8 weight counts one per element, as a float one), and never as
trainable; `ParamCount.packed` says how many of them there are per dtype (e.g. qint8 weights, float biases)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cnnprof.counting.formulas.quantized import unpacked
from cnnprof.counting.group import stage_of, totals
from cnnprof.counting.source import as_source
from cnnprof.counting.state import check_initialised
from cnnprof.results import Printable
from cnnprof.counting.types import (conv_type, module_ancestors, module_type, scoped_type, type_scopes,
                                   type_sort_key)

# ScriptObject namespaces of packed parameters: quantized conv / linear / embedding, and RNN cell params.
_PACKED_NAMESPACES = ("__torch__.torch.classes.quantized.", "__torch__.torch.classes.rnn.")


@dataclass(frozen=True)
class ParamCount(Printable):
    """Parameter counts of one model. Shared parameters are counted once; prints as `cnnprof params`."""

    total: int
    trainable: int
    by_stage: tuple[tuple[str, int], ...]  # top-level child (stem, stage1.., head) -> params
    by_type: tuple[tuple[str, int], ...]  # layer type -> params
    by_module: tuple[tuple[str, int], ...]  # every module path (inclusive counts), in module order
    model: str = ""  # the model's label (its class name for a module)
    packed: tuple[tuple[str, int], ...] = ()  # quantized models' packed weights and biases: (dtype, elements)

    @property
    def non_trainable(self) -> int:
        return self.total - self.trainable


def _owned(model: nn.Module) -> list[tuple[str, nn.Module, int, bool, str | None]]:
    """(module path, module, elements, trainable, packed dtype or None) of every parameter, each counted once
    (by its first owner), then of every tensor in packed params (see the module docstring)."""
    seen: set[int] = set()
    owned = []
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                owned.append((name, module, param.numel(), param.requires_grad, None))
    return owned + _packed(model)


def _packed(model: nn.Module) -> list[tuple[str, nn.Module, int, bool, str | None]]:
    """The tensors in the packed params each module holds (an attribute that is a quantized ScriptObject)."""
    import torch

    seen: set[int] = set()
    found = []
    for name, module in model.named_modules():
        for value in vars(module).values():
            if (isinstance(value, torch.ScriptObject) and id(value) not in seen
                    and value._type().qualified_name().startswith(_PACKED_NAMESPACES)):
                seen.add(id(value))
                found += [(name, module, t.numel(), False, str(t.dtype).removeprefix("torch."))
                          for t in unpacked(value)]
    return found


def total_params(model: nn.Module) -> int:
    """Parameters of a module, each counted once, packed quantized weights included."""
    return sum(o[2] for o in _owned(model))


def _layer_type(module: nn.Module, packed: bool) -> str:
    """module_type, or for a quantized module holding packed weights: its conv type, linear or other."""
    if packed and all(hasattr(module, a) for a in ("in_channels", "groups", "kernel_size")):
        return conv_type(module.in_channels, module.groups, tuple(module.kernel_size))
    if packed and "Linear" in type(module).__name__:
        return "linear"
    return module_type(module)


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
    by_type = totals(owned, lambda o: (scoped_type(o[0], scopes) or _layer_type(o[1], o[4] is not None),), size)
    packed = totals([o for o in owned if o[4] is not None], lambda o: (o[4],), size)
    inclusive = totals(owned, lambda o: module_ancestors(o[0]), size)
    return ParamCount(
        total=sum(o[2] for o in owned),
        trainable=sum(o[2] for o in owned if o[3]),
        by_stage=tuple((k, v[0]) for k, v in by_stage.items() if v[0]),
        by_type=tuple(sorted(((k, v[0]) for k, v in by_type.items()), key=lambda kv: type_sort_key(kv[0]))),
        by_module=tuple((name, inclusive.get(name, [0])[0]) for name, _ in model.named_modules()),
        model=label or type(model).__name__,
        packed=tuple((dtype, n[0]) for dtype, n in packed.items()),
    )
