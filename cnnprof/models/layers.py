"""Small building layers shared by the blocks: conv-norm-act, squeeze-and-excitation, LayerNorm2d."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from cnnprof.models.rounding import make_divisible

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),  # MobileNet v2 (Sandler et al., 2018)
    "hardswish": lambda: nn.Hardswish(inplace=True),  # h-swish, MobileNet v3 (Howard et al., 2019)
    "hardsigmoid": lambda: nn.Hardsigmoid(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),  # swish, EfficientNet (Tan & Le, 2019)
    "gelu": lambda: nn.GELU(),  # ConvNeXt (Liu et al., 2022)
    "sigmoid": lambda: nn.Sigmoid(),
    "none": lambda: nn.Identity(),
}
ACTIVATION_ALIASES = {"hswish": "hardswish", "h_swish": "hardswish", "swish": "silu", "identity": "none",
                      "linear": "none", "hsigmoid": "hardsigmoid"}
NORMS = ("batchnorm", "layernorm", "none")


def make_activation(name: str | None) -> nn.Module:
    """An activation module by name (ReLU, ReLU6, h-swish, SiLU, GELU, ...); None means identity."""
    key = ACTIVATION_ALIASES.get(str(name).lower(), str(name).lower()) if name is not None else "none"
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; available: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (ConvNeXt's stem, downsampling and head)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def make_norm(name: str | None, channels: int) -> nn.Module:
    """BatchNorm2d, LayerNorm2d or identity."""
    key = "none" if name is None else str(name).lower()
    if key == "batchnorm":
        return nn.BatchNorm2d(channels)
    if key == "layernorm":
        return LayerNorm2d(channels)
    if key == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}; available: {', '.join(NORMS)}")


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation; norm and activation may be 'none'."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1, bias: bool = False, norm: str | None = "batchnorm",
                 activation: str | None = "relu"):
        check_groups(in_channels, out_channels, groups)
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias),
            norm=make_norm(norm, out_channels),
            act=make_activation(activation),
        ))


def check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    """Raise a readable ValueError where groups do not divide the channels."""
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide both in_channels={in_channels} and "
                         f"out_channels={out_channels}")


def se_channels(ratio: float, reference: int, divisor: int = 1) -> int:
    """Squeeze width: ratio x reference channels, rounded to `divisor` (MobileNet v3 uses 8)."""
    if divisor > 1:
        return make_divisible(ratio * reference, divisor)
    return max(1, int(round(ratio * reference)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., CVPR 2018): global pool -> FC -> act -> FC -> gate -> rescale.

    The two FC layers are 1x1 convolutions with bias, as in torchvision and the SENet reference code.
    """

    cnnprof_type = "SE"  # its params and FLOPs are counted under layer type "SE" (cnnprof.counting.types)

    def __init__(self, channels: int, reduced: int, activation: str = "relu", gate: str = "sigmoid"):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = make_activation(activation)
        self.fc2 = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = make_activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


def make_se(channels: int, ratio: float, reference: int, divisor: int, activation: str, gate: str) -> nn.Module:
    """A SqueezeExcite module, or identity when ratio is 0."""
    if not ratio:
        return nn.Identity()
    return SqueezeExcite(channels, se_channels(ratio, reference, divisor), activation, gate)


class ChannelShuffle(nn.Module):
    """Interleave channels across groups (ShuffleNet, Zhang et al., CVPR 2018): data movement, no FLOPs."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)
