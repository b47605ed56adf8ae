"""What a config may say: the frozen config objects, the known keys and the bounds (no torch import)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


# Knobs every architecture has; the builder applies them (blocks never see them).
BUILDER_PARAMS: dict[str, Any] = {
    "num_classes": 1000,
    "resolution": 224,
    "in_channels": 3,
    "width_mult": 1.0,  # MobileNet's alpha: scales every channel count (see `width_rule`)
    "depth_mult": 1.0,  # EfficientNet's depth coefficient: ceil(depth * depth_mult) blocks per stage
    "width_divisor": 8,  # scaled channel counts are rounded to a multiple of this
}
TOP_KEYS = {"name", "family", "paper", "reference", "description", "aliases", "params", "stem", "stages",
            "generator", "head"}
STEM_KEYS = {"out_channels", "kernel_size", "stride", "padding", "bias", "norm", "activation", "pool",
             "width_rule"}
HEAD_KEYS = {"pool", "pool_size", "norm", "hidden", "activation", "dropout", "bias", "width_rule"}
POOL_KEYS = {"type", "kernel_size", "stride", "padding"}
STAGE_META_KEYS = {"block", "depth", "blocks", "out_channels", "stride", "pool", "width_rule"}
WIDTH_RULES = ("scale", "fixed", "scale_up")
CHANNEL_ARGS = ("expanded_channels",)  # block args that are channel counts, scaled like out_channels


# Bounds on what a config may ask for, so a typo cannot build for hours or overflow a tensor size.
MAX_CHANNELS = 1 << 20  # any channel count, after width_mult
MAX_SPATIAL = 1 << 15  # resolution; kernel sizes, strides and paddings are at most MAX_KERNEL
MAX_KERNEL = 1024
MAX_BLOCKS = 1000  # blocks in one model after depth_mult (ResNet-152 has 50, ResNet-1202 600)
MAX_HIDDEN = 64  # hidden layers of the head
MAX_MULT = 1024.0  # width_mult and depth_mult
MAX_ERROR = 300  # characters of an error message
NORM_NAMES = ("batchnorm", "layernorm", "none")


@dataclass(frozen=True)
class PoolSpec:
    type: str  # "max" | "avg"
    kernel_size: int
    stride: int
    padding: int = 0


@dataclass(frozen=True)
class StemSpec:
    out_channels: int
    kernel_size: int = 3
    stride: int = 2
    padding: int | None = None
    bias: bool = False
    norm: str = "batchnorm"
    activation: str = "relu"
    pool: PoolSpec | None = None


@dataclass(frozen=True)
class BlockSpec:
    block: str
    out_channels: int
    stride: int
    args: tuple[tuple[str, Any], ...]  # explicit constructor arguments from the config
    key: str  # where it came from, for error messages: "stages[2].blocks[0]"


@dataclass(frozen=True)
class StageSpec:
    blocks: tuple[BlockSpec, ...]
    pool: PoolSpec | None = None


@dataclass(frozen=True)
class HeadSpec:
    pool: str | None = "avg"
    pool_size: int = 1
    norm: str | None = None
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    dropout: float = 0.0
    bias: bool = True


@dataclass(frozen=True)
class ModelConfig:
    name: str
    family: str
    paper: str
    reference: str
    description: str
    aliases: tuple[str, ...]
    source: str
    params: tuple[tuple[str, Any], ...]  # all knobs after overrides, builder knobs included
    stem: StemSpec | None
    stages: tuple[StageSpec, ...]
    head: HeadSpec
    block_params: tuple[tuple[str, Any], ...] = field(default=())  # params offered to every block
    referenced_params: frozenset[str] = frozenset()  # params used as "$name" or {by: name}

    def param(self, name: str) -> Any:
        return dict(self.params)[name]

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Default input (N, C, H, W) at the config's resolution."""
        res = self.param("resolution")
        return (1, self.param("in_channels"), res, res)


_MODEL_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,100}")  # a model's display name: one short line
