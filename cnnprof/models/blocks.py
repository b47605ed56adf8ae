"""The block library, registered by name. Every block is `Block(in_channels, out_channels, stride, **args)`.

Config keys match these constructor arguments. Optional parts are nn.Identity() so forward() is a
straight line. Module headers cite the papers; variants (ResNeXt, SE, RegNet) are arguments, not classes.
"""
from __future__ import annotations

import functools
import inspect
import typing

import torch
from torch import nn

from cnnprof.models.arguments import MAX_CHANNELS, argument_problem
from cnnprof.models.layers import (
    ChannelShuffle,
    ConvNormAct,
    LayerNorm2d,
    check_groups,
    make_activation,
    make_se,
)

BLOCKS: dict[str, type[nn.Module]] = {}


def register_block(name: str):
    """Class decorator: add a block to the registry under `name` (duplicates raise). Its constructor then
    checks every argument's type and range first (see cnnprof.models.arguments), so a bad value fails
    with a ValueError naming the argument, never later inside forward or as a silently changed count."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in BLOCKS:
            raise ValueError(f"block '{name}' is already registered by {BLOCKS[name].__name__}")
        BLOCKS[name] = cls
        cls.block_name = name
        init = cls.__init__

        @functools.wraps(init)
        def checked_init(self, in_channels, out_channels, stride=1, **args):
            problem = check_block_args(cls, in_channels, out_channels, stride, args)
            if problem:
                raise ValueError(f"{problem[0]}: {problem[1]}")
            init(self, in_channels, out_channels, stride, **args)

        cls.__init__ = checked_init
        return cls

    return wrap


def check_block_args(cls: type[nn.Module], in_channels, out_channels, stride, args: dict) -> tuple[str, str] | None:
    """(argument, why) for the first argument of a block that has the wrong type or range, else None."""
    unknown = sorted(set(args) - block_arguments(cls))
    if unknown:
        return unknown[0], f"not an argument of block '{cls.block_name}'"
    hints = _hints(cls)
    values = {"in_channels": in_channels, "out_channels": out_channels, "stride": stride, **args}
    for arg, value in values.items():
        problem = argument_problem(cls.block_name, arg, value, hints.get(arg), values)
        if problem:
            return arg, problem
    return None


@functools.lru_cache(maxsize=None)
def _hints(cls: type[nn.Module]) -> dict[str, object]:
    """Constructor annotations, resolved (`int | None` -> typing objects)."""
    return typing.get_type_hints(inspect.unwrap(cls.__init__))


def get_block(name: str) -> type[nn.Module]:
    """Block class by registered name; unknown names raise listing the valid ones."""
    if name not in BLOCKS:
        raise KeyError(f"unknown block {str(name)[:40]!r}; available: {', '.join(sorted(BLOCKS))}")
    return BLOCKS[name]


@functools.lru_cache(maxsize=None)
def block_arguments(cls: type[nn.Module]) -> frozenset[str]:
    """Keyword arguments a block accepts besides in_channels, out_channels and stride (read once per class: a
    design search asks it for every block of every sample)."""
    names = set(inspect.signature(cls.__init__).parameters)
    return frozenset(names - {"self", "in_channels", "out_channels", "stride"})


@register_block("conv")
class ConvBlock(ConvNormAct):
    """Plain conv -> norm -> act layer (AlexNet, VGG, the 1x1 conv before a MobileNet head)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, kernel_size: int = 3,
                 padding: int | None = None, groups: int = 1, bias: bool = False, norm: str = "batchnorm",
                 activation: str = "relu"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups, bias, norm, activation)


@register_block("basic")
class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs + identity/projection shortcut (He et al., CVPR 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, activation: str = "relu"):
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, 3, stride, activation=activation)
        self.conv2 = ConvNormAct(out_channels, out_channels, 3, activation=None)
        self.shortcut = _projection(in_channels, out_channels, stride)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


@register_block("bottleneck")
class Bottleneck(nn.Module):
    """ResNet bottleneck 1x1 -> 3x3 -> 1x1 (He et al., 2016); groups give ResNeXt (Xie et al., CVPR 2017),
    group_width gives RegNet's X block (Radosavovic et al., 2020), se_ratio adds squeeze-and-excitation.

    bottleneck_ratio: inner width / out_channels (ResNet 0.25, ResNeXt-50 32x4d 0.5, RegNet 1.0).
    width_per_group: ResNeXt's d as torchvision's base_width: the inner width becomes
    int(out_channels * bottleneck_ratio * width_per_group / 64) * groups (ResNeXt-50 32x4d: ratio 0.25, d 4).
    stride_in_1x1: stride in the first 1x1 conv as in the ResNet paper (3.86 GMACs for ResNet-50);
    the default strides in the 3x3 conv like torchvision and ResNeXt (4.09 GMACs).
    se_placement: "output" (SENet: after the last BN, before the addition) or "bottleneck" (RegNetY:
    after the 3x3 conv). Squeeze width = se_ratio x (se_base: "in" block input, "mid" the SE's channels).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, bottleneck_ratio: float = 0.25,
                 groups: int = 1, group_width: int | None = None, stride_in_1x1: bool = False,
                 width_per_group: int | None = None, activation: str = "relu", se_ratio: float = 0.0, se_placement: str = "output",
                 se_base: str = "mid", se_divisor: int = 1, se_activation: str = "relu", se_gate: str = "sigmoid"):
        super().__init__()
        width = int(round(out_channels * bottleneck_ratio))
        if width_per_group is not None:
            if group_width or width_per_group < 1:
                raise ValueError(f"width_per_group={width_per_group}: must be >= 1 and not combined with group_width")
            # torchvision's ResNeXt: width = int(planes * (base_width / 64.)) * groups, planes = out * ratio.
            width = int(out_channels * bottleneck_ratio * (width_per_group / 64.0)) * groups
            if not 1 <= width <= MAX_CHANNELS:
                raise ValueError(f"width_per_group={width_per_group} x groups={groups} gives a bottleneck of {width} "
                                 f"channels, not 1..{MAX_CHANNELS:,}")
        if group_width:
            if width % group_width:
                raise ValueError(f"group_width={group_width} does not divide the bottleneck width {width}")
            groups = width // group_width
        check_groups(width, width, groups)
        if se_placement not in ("output", "bottleneck"):
            raise ValueError(f"se_placement must be 'output' or 'bottleneck', got {se_placement!r}")
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        se_width = out_channels if se_placement == "output" else width
        se_ref = _se_reference(se_base, in_channels, se_width)
        se = dict(ratio=se_ratio, reference=se_ref, divisor=se_divisor, activation=se_activation, gate=se_gate)
        self.conv1 = ConvNormAct(in_channels, width, 1, s1, activation=activation)
        self.conv2 = ConvNormAct(width, width, 3, s3, groups=groups, activation=activation)
        self.se_mid = make_se(width, **se) if se_placement == "bottleneck" else nn.Identity()
        self.conv3 = ConvNormAct(width, out_channels, 1, activation=None)
        self.se_out = make_se(out_channels, **se) if se_placement == "output" else nn.Identity()
        self.shortcut = _projection(in_channels, out_channels, stride)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se_out(self.conv3(self.se_mid(self.conv2(self.conv1(x)))))
        return self.act(y + self.shortcut(x))


@register_block("depthwise_separable")
class DepthwiseSeparable(nn.Module):
    """MobileNet v1 unit: 3x3 depthwise conv -> BN -> act -> 1x1 pointwise conv -> BN -> act
    (Howard et al., "MobileNets", 2017, Fig. 3)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, kernel_size: int = 3,
                 activation: str = "relu", pw_activation: str | None = "same"):
        super().__init__()
        self.dw = ConvNormAct(in_channels, in_channels, kernel_size, stride, groups=in_channels, activation=activation)
        pw_act = activation if pw_activation == "same" else pw_activation
        self.pw = ConvNormAct(in_channels, out_channels, 1, activation=pw_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


@register_block("inverted_residual")
class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck (MobileNet v2, Sandler et al., CVPR 2018); with SE and
    h-swish it is MobileNet v3's block (Howard et al., ICCV 2019), with SiLU and SE EfficientNet's MBConv
    (Tan & Le, ICML 2019), without SE MnasNet's (Tan et al., CVPR 2019).

    The expansion is `expanded_channels` if given (MobileNet v3's table) else round(in x expand_ratio);
    the 1x1 expansion is skipped when it would not change the width. Squeeze width for SE:
    se_ratio x (se_base: "in" block input as EfficientNet, "mid" expanded width as MobileNet v3).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, expand_ratio: float = 6.0,
                 expanded_channels: int | None = None, kernel_size: int = 3, activation: str = "relu6",
                 se_ratio: float = 0.0, se_base: str = "in", se_divisor: int = 1, se_activation: str = "relu",
                 se_gate: str = "sigmoid", residual: bool = True):
        super().__init__()
        mid = expanded_channels or int(round(in_channels * expand_ratio))
        self.expand = ConvNormAct(in_channels, mid, 1, activation=activation) if mid != in_channels else nn.Identity()
        self.dw = ConvNormAct(mid, mid, kernel_size, stride, groups=mid, activation=activation)
        self.se = make_se(mid, se_ratio, _se_reference(se_base, in_channels, mid), se_divisor, se_activation, se_gate)
        self.project = ConvNormAct(mid, out_channels, 1, activation=None)
        self.has_skip = residual and stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.has_skip else y


@register_block("shuffle_v1")
class ShuffleV1Unit(nn.Module):
    """ShuffleNet unit (Zhang et al., CVPR 2018, Fig. 2): grouped 1x1 -> channel shuffle -> 3x3 depthwise
    -> grouped 1x1; stride 2 concatenates a 3x3 average-pooled shortcut. Bottleneck = out / 4.
    first_grouped=False keeps the very first 1x1 ungrouped (its input has only 24 channels)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, groups: int = 3,
                 bottleneck_ratio: float = 0.25, first_grouped: bool = True, activation: str = "relu"):
        super().__init__()
        mid = int(out_channels * bottleneck_ratio)
        branch_out = out_channels - in_channels if stride > 1 else out_channels
        if branch_out <= 0:
            raise ValueError(f"out_channels={out_channels} must exceed in_channels={in_channels} at stride 2")
        self.pw1 = ConvNormAct(in_channels, mid, 1, groups=groups if first_grouped else 1, activation=activation)
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.dw = ConvNormAct(mid, mid, 3, stride, groups=mid, activation=None)
        self.pw2 = ConvNormAct(mid, branch_out, 1, groups=groups, activation=None)
        self.shortcut = nn.AvgPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.concat = stride > 1
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(self.dw(self.shuffle(self.pw1(x))))
        if self.concat:
            return torch.cat([self.shortcut(x), self.act(y)], dim=1)
        return self.act(y + x)


@register_block("shuffle_v2")
class ShuffleV2Unit(nn.Module):
    """ShuffleNet v2 unit (Ma et al., ECCV 2018, Fig. 3c/d): channel split, 1x1 -> 3x3 depthwise -> 1x1 on
    one half, concat, shuffle; stride 2 processes the whole input in two branches."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, activation: str = "relu"):
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"out_channels={out_channels} must be even (two branches)")
        half = out_channels // 2
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"stride 1 needs in_channels == out_channels, got {in_channels} -> {out_channels}")
        self.branch1 = nn.Sequential(
            ConvNormAct(in_channels, in_channels, 3, stride, groups=in_channels, activation=None),
            ConvNormAct(in_channels, half, 1, activation=activation),
        ) if stride > 1 else nn.Identity()
        self.branch2 = nn.Sequential(
            ConvNormAct(in_channels if stride > 1 else half, half, 1, activation=activation),
            ConvNormAct(half, half, 3, stride, groups=half, activation=None),
            ConvNormAct(half, half, 1, activation=activation),
        )
        self.split = stride == 1
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], dim=1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return self.shuffle(out)


@register_block("convnext")
class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al., CVPR 2022): 7x7 depthwise -> LayerNorm -> Linear 4x -> GELU -> Linear
    -> layer scale, residual. A stride or width change first applies the paper's downsampling layer
    (LayerNorm + 2x2 stride-2 conv)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, kernel_size: int = 7,
                 mlp_ratio: float = 4.0, layer_scale: float = 1e-6, activation: str = "gelu"):
        super().__init__()
        self.downsample = nn.Sequential(
            LayerNorm2d(in_channels), nn.Conv2d(in_channels, out_channels, stride, stride, bias=True),
        ) if stride > 1 or in_channels != out_channels else nn.Identity()
        hidden = int(out_channels * mlp_ratio)
        self.dw = nn.Conv2d(out_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=out_channels)
        self.norm = nn.LayerNorm(out_channels, eps=1e-6)
        self.fc1 = nn.Linear(out_channels, hidden)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(hidden, out_channels)
        self.gamma = nn.Parameter(torch.full((out_channels,), float(layer_scale))) if layer_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        y = self.fc2(self.act(self.fc1(self.norm(self.dw(x).permute(0, 2, 3, 1)))))
        if self.gamma is not None:
            y = y * self.gamma
        return x + y.permute(0, 3, 1, 2)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """1x1 conv + BN shortcut where the shape changes, else identity."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return ConvNormAct(in_channels, out_channels, 1, stride, activation=None)


def _se_reference(base: str, in_channels: int, mid_channels: int) -> int:
    if base not in ("in", "mid"):
        raise ValueError(f"se_base must be 'in' or 'mid', got {base!r}")
    return in_channels if base == "in" else mid_channels
