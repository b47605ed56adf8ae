"""Every config builds and reproduces its golden parameter count and MACs; paper claims hold."""
import math

import pytest

import cnnprof
from cnnprof.models.config import load_config
from cnnprof.models.zoo import zoo_aliases, zoo_names, zoo_path
from tests.conftest import GOLDEN, ZOO


def test_every_config_has_a_golden_entry():
    assert set(ZOO) == set(GOLDEN) == set(zoo_names())


@pytest.mark.parametrize("name", ZOO)
def test_params_match_reference(name):
    pc = cnnprof.count_params(cnnprof.build_model(name, device="meta"))
    assert pc.total == GOLDEN[name]["params"]
    assert pc.trainable == pc.total
    assert sum(n for _, n in pc.by_stage) == pc.total
    assert sum(n for _, n in pc.by_type) == pc.total


@pytest.mark.parametrize("name", ZOO)
def test_macs_match_reference(name):
    fc = cnnprof.count_flops(name)
    assert fc.input_shape == (1, 3, 224, 224)
    assert fc.macs == GOLDEN[name]["macs"]
    assert fc.flops("macc") == fc.macs and fc.flops("nvidia") == 2 * fc.macs
    assert fc.uncounted == ()  # every op of the zoo has a formula or is free


@pytest.mark.parametrize("name", ZOO)
def test_config_metadata(name):
    config = load_config(zoo_path(name))
    assert config.name == name
    assert config.paper and config.family and config.description and config.reference


def test_aliases_resolve_case_insensitively():
    aliases = zoo_aliases()
    assert aliases["resnext50"] == "resnext50_32x4d"
    assert aliases["resnext101"] == "resnext101_32x8d"
    assert aliases["mobilenet"] == "mobilenet_v1"
    assert aliases["shufflenet_v2"] == "shufflenet_v2_x1_0"
    assert cnnprof.count_params("ResNeXt50").total == GOLDEN["resnext50_32x4d"]["params"]
    assert cnnprof.count_params("MOBILENET").total == GOLDEN["mobilenet_v1"]["params"]


# MobileNets paper (Howard et al., 2017) Table 6 (width multiplier) and Table 7 (resolution):
# million MACs and million parameters.
@pytest.mark.parametrize("alpha, mmacs, mparams", [(1.0, 569, 4.2), (0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5)])
def test_mobilenet_v1_width_multiplier_reproduces_table_6(alpha, mmacs, mparams):
    assert round(cnnprof.count_flops("mobilenet_v1", width_mult=alpha).macs / 1e6) == mmacs
    assert round(cnnprof.count_params(cnnprof.build_model("mobilenet_v1", "meta", width_mult=alpha)).total / 1e6, 1) == mparams


@pytest.mark.parametrize("resolution, mmacs", [(224, 569), (192, 418), (160, 290), (128, 186)])
def test_mobilenet_v1_resolution_reproduces_table_7(resolution, mmacs):
    macs = cnnprof.count_flops("mobilenet_v1", resolution=resolution).macs
    assert abs(macs / 1e6 - mmacs) <= 1  # the paper rounds to whole millions (290.7 -> 290)


@pytest.mark.parametrize("groups, mflops", [(1, 143), (2, 140), (3, 137), (4, 133), (8, 137)])
def test_shufflenet_v1_reproduces_table_1_within_1_5_percent(groups, mflops):
    macs = cnnprof.count_flops("shufflenet_v1", groups=groups).macs
    assert abs(macs / 1e6 - mflops) / mflops <= 0.015


def test_shufflenet_v1_rejects_groups_outside_table_1():
    with pytest.raises(cnnprof.errors.ConfigError, match="groups.*allowed: 1, 2, 3, 4, 8"):
        cnnprof.build_model("shufflenet_v1", "meta", groups=5)


def test_resnet50_stride_in_1x1_gives_the_papers_3_86_gmacs():
    macs = cnnprof.count_flops("resnet50", stride_in_1x1=True).macs
    assert round(macs / 1e9, 2) == 3.86
    assert cnnprof.count_params(cnnprof.build_model("resnet50", "meta", stride_in_1x1=True)).total == GOLDEN["resnet50"]["params"]


def test_senet_param_counts_match_the_paper():
    assert round(GOLDEN["se_resnet50"]["params"] / 1e6, 1) == 28.1
    assert round(GOLDEN["se_resnext50_32x4d"]["params"] / 1e6, 1) == 27.6


def test_se_adds_less_than_one_percent_macs(cli):
    rows = cli.json("compare", "resnet50", "se_resnet50")
    assert 1.0 < rows[1]["macs_ratio"] < 1.01
    assert rows[1]["params_ratio"] > 1.09  # but ~10% more parameters


def test_regnet_generator_reproduces_torchvision_stage_widths():
    from cnnprof.models.regnet import regnet_widths

    assert regnet_widths(22, 24, 24.48, 2.54) == ([24, 64, 152, 392], [1, 2, 7, 12])  # before group-width rounding
    x = load_config(zoo_path("regnet_x_400mf"))
    assert [s.blocks[0].out_channels for s in x.stages] == [32, 64, 160, 400]
    y = load_config(zoo_path("regnet_y_400mf"))
    assert [s.blocks[0].out_channels for s in y.stages] == [48, 104, 208, 440]
    assert [len(s.blocks) for s in y.stages] == [1, 3, 6, 6]


def test_efficientnet_depth_mult_rounds_up():
    config = load_config(zoo_path("efficientnet_b0"), {"depth_mult": 1.1})
    assert [len(s.blocks) for s in config.stages][:7] == [math.ceil(d * 1.1) for d in (1, 2, 2, 3, 3, 4, 1)]


def test_width_mult_scales_channels_to_multiples_of_8():
    config = load_config(zoo_path("mobilenet_v2"), {"width_mult": 0.5})
    assert config.stem.out_channels == 16
    assert config.stages[-1].blocks[0].out_channels == 1280  # last conv only ever scales up
    assert all(b.out_channels % 8 == 0 for s in config.stages for b in s.blocks)


@pytest.mark.parametrize("base, senet", [("resnet50", "se_resnet50"), ("resnext50_32x4d", "se_resnext50_32x4d")])
def test_senet_is_resnet_plus_the_se_ratio_knob(base, senet):
    model = cnnprof.build_model(base, "meta", se_ratio=0.0625)
    assert cnnprof.count_params(model).total == GOLDEN[senet]["params"]
    assert cnnprof.count_flops(base, se_ratio=0.0625).macs == GOLDEN[senet]["macs"]
