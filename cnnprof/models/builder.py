"""The one generic builder: ModelConfig -> nn.Module (stem -> stages -> head)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator

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


def _pool(spec: PoolSpec) -> nn.Module:
    cls = nn.MaxPool2d if spec.type == "max" else nn.AvgPool2d
    return cls(spec.kernel_size, spec.stride, spec.padding)


@dataclass(frozen=True)
class Part:
    """One top-level part of a Net: the stem, a block or a stage's pool (of stage `stage`, 1-based), or the head.

    Its counts depend only on `key` (the block type and every argument) and its input shape, which is what
    design searches memoise (cnnprof.design.memo); `make` builds it on the current default device."""

    place: str  # stem | stage | head
    stage: int
    key: str
    make: Callable[[], nn.Module]


def build(config: ModelConfig) -> Net:
    """Build the network a config describes (on the current default device)."""
    stem: nn.Module = nn.Identity()
    stages: list[list[nn.Module]] = []
    head: nn.Module = nn.Identity()
    for part in parts(config):
        module = part.make()
        if part.place == "stem":
            stem = module
        elif part.place == "head":
            head = module
        else:
            stages += [[] for _ in range(part.stage - len(stages))]
            stages[part.stage - 1].append(module)
    return Net(stem, [nn.Sequential(*blocks) for blocks in stages], head, config)


def _made(fail: Callable[[str, Any], Exception], key: str, errors: tuple[type[Exception], ...],
          cls: Callable[..., nn.Module], args: tuple, kwargs: dict) -> nn.Module:
    """cls(*args, **kwargs); a constructor's complaint (one of `errors`) is one line naming the config key."""
    try:
        return cls(*args, **kwargs)
    except errors as exc:
        raise fail(key, exc) from None


def parts(config: ModelConfig) -> Iterator[Part]:
    """The parts of the network a config describes, in order, each checked before it is yielded (a consumer
    that makes every part as it comes, as `build` does, meets the config's problems in the order they appear)."""
    fail = lambda key, why: ConfigError(f"{config.source}: {key}: {why}"[:400])  # noqa: E731 - one short line
    params = config.param
    channels = params("in_channels")
    if config.stem is not None:
        s = config.stem
        yield Part("stem", 0, repr(("stem", channels, s)), partial(_stem, fail, channels, s))
        channels = s.out_channels
    block_params = dict(config.block_params)
    used: set[str] = set()
    for index, stage in enumerate(config.stages, start=1):
        for spec in stage.blocks:
            cls, args = _block(fail, spec, channels, block_params, used)
            key = repr((spec.block, channels, spec.out_channels, spec.stride, tuple(sorted(args.items()))))
            yield Part("stage", index, key, partial(_made, fail, spec.key, (ValueError, TypeError), cls,
                                                    (channels, spec.out_channels, spec.stride), args))
            channels = spec.out_channels
        if stage.pool is not None:
            yield Part("stage", index, repr(("pool", stage.pool)), partial(_pool, stage.pool))
    unused = set(block_params) - used - config.referenced_params
    if unused:
        raise fail(f"params.{sorted(unused)[0]}", "no block of this architecture takes this argument")
    num_classes = params("num_classes")
    yield Part("head", 0, repr(("head", channels, num_classes, config.head)),
               partial(_made, fail, "head", (ValueError, KeyError), ClassifierHead, (channels, num_classes, config.head),
                       {}))


def _stem(fail: Callable[[str, Any], Exception], channels: int, s: Any) -> nn.Module:
    conv = _made(fail, "stem", (ValueError,), ConvNormAct, (channels, s.out_channels, s.kernel_size, s.stride,
                 s.padding), dict(bias=s.bias, norm=s.norm, activation=s.activation))
    return nn.Sequential(conv, *([_pool(s.pool)] if s.pool is not None else []))


def _block(fail: Callable[[str, Any], Exception], spec: Any, channels: int, block_params: dict,
           used: set[str]) -> tuple[type[nn.Module], dict]:
    """A block's class and its arguments (its own, then the params it takes), every one checked."""
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
    return cls, args
