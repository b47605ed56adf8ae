"""Layer-type taxonomy shared by the params, FLOPs and runtime breakdowns."""
from __future__ import annotations

from typing import Any, Sequence

# Display order of the layer types in every breakdown ("conv KxK" entries sort before the rest).
TYPE_ORDER = ("depthwise conv", "pointwise conv", "grouped conv", "linear", "norm", "SE", "activation",
              "pooling", "element-wise", "other")


def conv_type(in_channels: int, groups: int, kernel: Sequence[int]) -> str:
    """'depthwise conv' (groups == in_channels > 1), 'grouped conv', 'pointwise conv' (1x1) or 'conv KxK'."""
    if groups > 1:
        return "depthwise conv" if groups == in_channels else "grouped conv"
    if all(k == 1 for k in kernel):
        return "pointwise conv"
    return "conv " + "x".join(str(k) for k in kernel)


def module_depth(path: str) -> int:
    """Nesting level of a module path: 0 for the model itself (""), 1 for "stage1", 2 for "stage1.0"."""
    return path.count(".") + 1 if path else 0


def module_ancestors(path: str) -> list[str]:
    """The path and every enclosing module path, the model ("") first: "a.b" -> ["", "a", "a.b"]."""
    parts = path.split(".") if path else []
    return [".".join(parts[:d]) for d in range(len(parts) + 1)]


def type_sort_key(name: str) -> tuple[int, str]:
    """Standard convs first (by kernel), then TYPE_ORDER, then anything else alphabetically."""
    if name.startswith("conv "):
        return (0, f"{int(name.split()[1].split('x')[0]):04d}")
    return (1 + TYPE_ORDER.index(name), "") if name in TYPE_ORDER else (99, name)


def declared_type(module: Any) -> str | None:
    """The layer type a module class declares for everything inside it (`cnnprof_type = "SE"`), or None."""
    value = getattr(type(module), "cnnprof_type", None)
    return value if isinstance(value, str) and value else None


def type_scopes(model: Any) -> tuple[tuple[str, str], ...]:
    """(module path, declared type) of every module of `model` that declares a layer type."""
    return tuple((name, layer_type) for name, m in model.named_modules()
                 if (layer_type := declared_type(m)) is not None)


def scoped_type(path: str, scopes: Sequence[tuple[str, str]]) -> str | None:
    """The declared type of the innermost declaring module that contains `path`, or None."""
    found = None
    for scope, layer_type in scopes:
        if path == scope or path.startswith(scope + ".") or not scope:
            found = layer_type
    return found


def module_type(module: Any) -> str:
    """Layer type of a module that owns parameters directly (conv KxK / depthwise / ..., linear, norm, other)."""
    from torch import nn

    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    if isinstance(module, nn.modules.conv._ConvNd):
        return conv_type(module.in_channels, module.groups, module.kernel_size)
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, norms):
        return "norm"
    return "other"
