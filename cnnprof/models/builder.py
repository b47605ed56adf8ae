"""The one generic builder: ModelConfig -> nn.Module (stem -> stages -> head)."""
from __future__ import annotations

import torch
from torch import nn

from cnnprof.models.config import HeadSpec, ModelConfig, PoolSpec
from cnnprof.errors import ConfigError
from cnnprof.models.blocks import block_arguments, check_block_args, get_block
from cnnprof.models.layers import ConvNormAct, LayerNorm2d, make_activation


class Net(nn.Module):
    """stem -> stage1 .. stageN -> head; the top-level children are the stages of the by-stage breakdowns."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], head: nn.Module, config: ModelConfig):
        super().__init__()
        self.stem = stem
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"stage{i}", stage)
        self.head = head
        self.cnnprof_name = config.name
        self.default_input_shape = config.input_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


class ClassifierHead(nn.Module):
    """Pool -> (LayerNorm) -> flatten -> [Linear -> act -> dropout] x hidden -> (dropout) -> Linear."""

    def __init__(self, in_channels: int, num_classes: int, spec: HeadSpec):
        super().__init__()
        pools = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}
        self.pool = pools[spec.pool](spec.pool_size) if spec.pool else nn.Identity()
        self.norm = LayerNorm2d(in_channels) if spec.norm == "layernorm" else nn.Identity()
        self.flatten = nn.Flatten(1)
        width = in_channels * spec.pool_size**2
        layers: list[nn.Module] = []
        for hidden in spec.hidden:
            layers += [nn.Linear(width, hidden, bias=spec.bias), make_activation(spec.activation)]
            layers += [nn.Dropout(spec.dropout)] if spec.dropout else []
            width = hidden
        if spec.dropout and not spec.hidden:
            layers.append(nn.Dropout(spec.dropout))
        layers.append(nn.Linear(width, num_classes, bias=spec.bias))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.norm(self.pool(x))))


def _pool(spec: PoolSpec | None) -> list[nn.Module]:
    if spec is None:
        return []
    cls = nn.MaxPool2d if spec.type == "max" else nn.AvgPool2d
    return [cls(spec.kernel_size, spec.stride, spec.padding)]


def build(config: ModelConfig) -> Net:
    """Build the network a config describes (on the current default device)."""
    fail = lambda key, why: ConfigError(f"{config.source}: {key}: {why}"[:400])  # noqa: E731 - one short line
    params = config.param
    channels = params("in_channels")
    stem: nn.Module = nn.Identity()
    if config.stem is not None:
        s = config.stem
        try:
            conv = ConvNormAct(channels, s.out_channels, s.kernel_size, s.stride, s.padding, bias=s.bias,
                               norm=s.norm, activation=s.activation)
        except ValueError as exc:
            raise fail("stem", exc) from None
        stem = nn.Sequential(conv, *_pool(s.pool))
        channels = s.out_channels
    block_params = dict(config.block_params)
    used: set[str] = set()
    stages = []
    for stage in config.stages:
        blocks = []
        for spec in stage.blocks:
            try:
                cls = get_block(spec.block)
            except KeyError as exc:
                raise fail(f"{spec.key}.block", exc.args[0]) from None
            accepted = block_arguments(cls)
            args = dict(spec.args)
            for name in args:
                if name not in accepted:
                    raise fail(f"{spec.key}.{name}", f"not an argument of block '{spec.block}'; "
                                                     f"allowed: {', '.join(sorted(accepted))}")
            for name, value in block_params.items():
                if name in accepted:
                    used.add(name)
                    args.setdefault(name, value)
            # Type and range of every argument, with the key path, before anything is built.
            problem = check_block_args(cls, channels, spec.out_channels, spec.stride, args)
            if problem:
                name = problem[0]
                from_params = name not in dict(spec.args) and name in block_params
                raise fail(f"params.{name}" if from_params else f"{spec.key}.{name}", problem[1])
            try:
                blocks.append(cls(channels, spec.out_channels, spec.stride, **args))
            except (ValueError, TypeError) as exc:
                raise fail(spec.key, exc) from None
            channels = spec.out_channels
        stages.append(nn.Sequential(*blocks, *_pool(stage.pool)))
    unused = set(block_params) - used - config.referenced_params
    if unused:
        raise fail(f"params.{sorted(unused)[0]}", "no block of this architecture takes this argument")
    try:
        head = ClassifierHead(channels, params("num_classes"), config.head)
    except (ValueError, KeyError) as exc:
        raise fail("head", exc) from None
    return Net(stem, stages, head, config)
