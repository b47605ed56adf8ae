"""Each registered block's parameter count against its hand-derived closed form."""
import pytest
import torch

from cnnprof.counting.params import count_params
from cnnprof.models.blocks import BLOCKS, get_block
from cnnprof.models.layers import se_channels


def bn(c):
    return 2 * c


def se(c, r):
    return 2 * c * r + r + c  # two 1x1 convs with bias


def conv_block(i, o, s, kernel_size=3, groups=1, bias=False, norm="batchnorm"):
    return i * o // groups * kernel_size**2 + (o if bias else 0) + (bn(o) if norm == "batchnorm" else 0)


def basic(i, o, s):
    proj = i * o + bn(o) if (s != 1 or i != o) else 0
    return 9 * i * o + bn(o) + 9 * o * o + bn(o) + proj


def bottleneck(i, o, s, bottleneck_ratio=0.25, groups=1, se_ratio=0.0):
    w = int(o * bottleneck_ratio)
    proj = i * o + bn(o) if (s != 1 or i != o) else 0
    extra = se(o, se_channels(se_ratio, o)) if se_ratio else 0
    return i * w + bn(w) + 9 * w * w // groups + bn(w) + w * o + bn(o) + proj + extra


def depthwise_separable(i, o, s):
    return 9 * i + bn(i) + i * o + bn(o)


def inverted_residual(i, o, s, expand_ratio=6, kernel_size=3, se_ratio=0.0):
    m = i * expand_ratio
    expand = i * m + bn(m) if m != i else 0
    extra = se(m, se_channels(se_ratio, i)) if se_ratio else 0
    return expand + kernel_size**2 * m + bn(m) + extra + m * o + bn(o)


def shuffle_v1(i, o, s, groups=3, first_grouped=True):
    m, b = o // 4, (o - i if s > 1 else o)
    g1 = groups if first_grouped else 1
    return i * m // g1 + bn(m) + 9 * m + bn(m) + m * b // groups + bn(b)


def shuffle_v2(i, o, s):
    h = o // 2
    if s > 1:
        return (9 * i + bn(i) + i * h + bn(h)) + (i * h + bn(h) + 9 * h + bn(h) + h * h + bn(h))
    return h * h + bn(h) + 9 * h + bn(h) + h * h + bn(h)


def convnext(i, o, s, mlp_ratio=4):
    down = 2 * i + i * o * s * s + o if (s > 1 or i != o) else 0
    hidden = mlp_ratio * o
    return down + 49 * o + o + 2 * o + o * hidden + hidden + hidden * o + o + o


# block name -> (closed form, [(in, out, stride, kwargs), ...])
CASES = {
    "conv": (conv_block, [(3, 64, 2, {}), (64, 64, 1, {"kernel_size": 1}), (32, 64, 1, {"groups": 4, "bias": True}),
                          (3, 96, 4, {"kernel_size": 11, "norm": "none", "bias": True})]),
    "basic": (basic, [(64, 64, 1, {}), (64, 128, 2, {})]),
    "bottleneck": (bottleneck, [(64, 256, 1, {}), (256, 256, 1, {}), (256, 512, 2, {"bottleneck_ratio": 0.5, "groups": 32}),
                                (256, 256, 1, {"se_ratio": 0.0625}), (1024, 2048, 2, {"bottleneck_ratio": 1.0, "groups": 32})]),
    "depthwise_separable": (depthwise_separable, [(32, 64, 1, {}), (64, 128, 2, {})]),
    "inverted_residual": (inverted_residual, [(32, 16, 1, {"expand_ratio": 1}), (16, 24, 2, {}), (24, 24, 1, {}),
                                              (40, 80, 2, {"kernel_size": 5, "se_ratio": 0.25})]),
    "shuffle_v1": (shuffle_v1, [(24, 240, 2, {"first_grouped": False}), (240, 240, 1, {}), (240, 480, 2, {}),
                                (272, 272, 1, {"groups": 4})]),
    "shuffle_v2": (shuffle_v2, [(24, 116, 2, {}), (116, 116, 1, {})]),
    "convnext": (convnext, [(96, 96, 1, {}), (96, 192, 2, {}), (64, 64, 1, {"mlp_ratio": 2})]),
}


def test_every_block_has_a_closed_form():
    assert set(CASES) == set(BLOCKS)


@pytest.mark.parametrize("name, i, o, s, kwargs",
                         [(n, *case) for n, (_, cases) in CASES.items() for case in cases])
def test_block_params_match_closed_form(name, i, o, s, kwargs):
    with torch.device("meta"):
        block = get_block(name)(i, o, s, **kwargs)
    assert count_params(block).total == CASES[name][0](i, o, s, **kwargs)


@pytest.mark.parametrize("name, i, o, s, kwargs",
                         [(n, *case) for n, (_, cases) in CASES.items() for case in cases])
def test_block_runs_and_keeps_the_declared_output_shape(name, i, o, s, kwargs):
    with torch.device("meta"):
        block = get_block(name)(i, o, s, **kwargs).eval()
        y = block(torch.empty(2, i, 32, 32))
    assert y.shape == (2, o, -(-32 // s), -(-32 // s))


def test_registry_rejects_duplicates_and_lists_names_on_unknown():
    from cnnprof.models.blocks import register_block

    with pytest.raises(ValueError, match="already registered"):
        register_block("basic")(type("X", (torch.nn.Module,), {}))
    with pytest.raises(KeyError, match="available: .*bottleneck"):
        get_block("nope")


def test_groups_must_divide_channels():
    with pytest.raises(ValueError, match="groups=3 must divide"):
        get_block("bottleneck")(64, 256, 1, groups=3)


def test_every_block_argument_has_a_checkable_type():
    """Each argument's annotation is one of bool/int/float/str (optionally None), so its type is checked."""
    from cnnprof.models.arguments import _kind
    from cnnprof.models.blocks import _hints, block_arguments

    for name, cls in BLOCKS.items():
        hints = _hints(cls)
        for arg in block_arguments(cls):
            assert _kind(hints.get(arg))[1] is not None, f"{name}.{arg} has no bool/int/float/str annotation"


@pytest.mark.parametrize("name, i, o, s, kwargs, pattern", [
    ("bottleneck", 64, 256, 1, {"group_width": 0}, r"group_width: must be in \[1, "),
    ("bottleneck", 64, 256, 1, {"se_ratio": -0.25}, r"se_ratio: must be in \[0, 1\)"),
    ("bottleneck", 64, 256, 1, {"se_ratio": 0.25, "se_divisor": -8}, r"se_divisor: must be in \[1, "),
    ("bottleneck", 64, 256, 1, {"stride_in_1x1": "false"}, r"stride_in_1x1: expected true or false, got 'false'"),
    ("bottleneck", 64, 256, 1, {"bottleneck_ratio": float("nan")}, r"bottleneck_ratio: expected a finite number"),
    ("bottleneck", 64, 256, 1, {"se_placement": "middle"}, r"se_placement: 'middle' is not one of output, bottleneck"),
    ("conv", 3, 64, 1, {"bias": "false"}, r"bias: expected true or false"),
    ("conv", 3, 64, 1, {"kernel_size": 0}, r"kernel_size: must be in \[1, "),
    ("conv", 3, 64, 1, {"kernel_size": False}, r"kernel_size: expected an integer, got False"),
    ("conv", 3, 64, 1, {"padding": -1}, r"padding: must be in \[0, "),
    ("conv", 3, 64, 1, {"padding": 0.5}, r"padding: expected an integer, got 0\.5"),
    ("conv", 4, 64, 1, {"groups": True}, r"groups: expected an integer, got True"),
    ("conv", 3, 64, 1, {"activation": "swishy"}, r"activation: 'swishy' is not one of relu"),
    ("conv", 3, 64, 0, {}, r"stride: must be in \[1, "),
    ("conv", 3, -64, 1, {}, r"out_channels: must be in \[1, "),
    ("inverted_residual", 16, 16, 1, {"kernel_size": 4}, r"kernel_size: must be odd for block 'inverted_residual'"),
    ("inverted_residual", 16, 16, 1, {"expand_ratio": 0.01}, r"expand_ratio: 0\.01 x in_channels=16 gives 0 channels"),
    ("inverted_residual", 16, 16, 1, {"expanded_channels": 0}, r"expanded_channels: must be in \[1, "),
    ("convnext", 96, 96, 1, {"layer_scale": float("inf")}, r"layer_scale: expected a finite number"),
    ("convnext", 96, 96, 1, {"mlp_ratio": -4}, r"mlp_ratio: must be in \(0, 64\]"),
    ("shuffle_v1", 240, 240, 1, {"first_grouped": 0}, r"first_grouped: expected true or false, got 0"),
    ("basic", 64, 64, 1, {"colour": "red"}, r"colour: not an argument of block 'basic'"),
])
def test_blocks_reject_bad_arguments_before_building(name, i, o, s, kwargs, pattern):
    with torch.device("meta"), pytest.raises(ValueError, match=pattern):
        get_block(name)(i, o, s, **kwargs)
