"""Config loading, overrides and every kind of bad config: one-line errors naming file and key."""
import pytest

import cnnprof
from cnnprof.config import load_config, parse_override, zoo_path
from cnnprof.errors import ConfigError, ModelSpecError

MINIMAL = """
name: tiny
params: {width_mult: 1.0}
stem: {out_channels: 16, kernel_size: 3, stride: 2}
stages:
  - {block: basic, depth: 1, out_channels: 16, stride: 1}
head: {pool: avg}
"""


def write(tmp_path, text, name="net.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_config_builds_and_counts(tmp_path):
    path = write(tmp_path, MINIMAL)
    pc = cnnprof.count_params(str(path))
    assert pc.total == 3 * 16 * 9 + 32 + 2 * (9 * 16 * 16 + 32) + 16 * 1000 + 1000


@pytest.mark.parametrize("text, pattern", [
    ("stages: [\n  - {block: basic\n", r"net\.yaml:\d+:\d+: "),
    ("", r"net\.yaml: file is empty"),
    ("- 1\n- 2\n", r"net\.yaml: top level must be a mapping, got list"),
    ("!!python/object/apply:os.system ['echo hi']\n", r"net\.yaml:1:1: YAML tag not allowed"),
    (MINIMAL + "colour: red\n", r"net\.yaml: colour: unknown key"),
    (MINIMAL.replace("depth: 1", "depth: -1"), r"stages\[0\]\.depth: must be > 0"),
    (MINIMAL.replace("depth: 1", "depth: two"), r"stages\[0\]\.depth: expected an integer"),
    (MINIMAL.replace("block: basic", "block: nosuch"), r"stages\[0\]\.block: unknown block 'nosuch'; available:"),
    (MINIMAL.replace("stride: 1}", "stride: 1, groups: 2}"), r"stages\[0\]\.groups: not an argument of block 'basic'"),
    (MINIMAL.replace("stem: {", "stem: {norm: fancy, "), r"stem\.norm: 'fancy' is not one of batchnorm, layernorm, none"),
    (MINIMAL.replace("head: {pool: avg}", "head: {pool: avg, dropout: 1.5}"), r"head\.dropout: must be in \[0, 1\), got 1\.5"),
    (MINIMAL.replace("head: {pool: avg}", ""), r"head: missing"),
    (MINIMAL.replace("{width_mult: 1.0}", "{width_mult: 1.0, se_ratio: 0.25}"), r"params\.se_ratio: no block"),
    (MINIMAL.replace("out_channels: 16, stride: 1", "out_channels: $nope, stride: 1"), r"refers to unknown param 'nope'"),
    (MINIMAL.replace("block: basic, depth: 1, out_channels: 16, stride: 1", "block: bottleneck, depth: 1, out_channels: 64, groups: 3"),
     r"stages\[0\]: groups=3 must divide"),
])
def test_bad_configs_raise_one_line_errors(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        cnnprof.build_model(str(path), device="meta")
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ModelSpecError, match="no such config file"):
        cnnprof.build_model(str(tmp_path / "missing.yaml"))


def test_overrides_params_and_dotted_paths():
    config = load_config(zoo_path("resnet50"), {"stages.2.depth": 23})
    assert [len(s.blocks) for s in config.stages] == [3, 4, 23, 3]
    assert cnnprof.count_params(cnnprof.build_model("resnet50", "meta", **{"stages.2.depth": 23})).total == 44549160
    assert cnnprof.count_params(cnnprof.build_model("resnet50", "meta", groups=32, bottleneck_ratio=0.5)).total == 25028904


@pytest.mark.parametrize("overrides, pattern", [
    ({"widht_mult": 0.5}, r"widht_mult: unknown key \(did you mean width_mult\?\)"),
    ({"width_mult": "wide"}, r"params\.width_mult: expected a number \(float\), got 'wide'"),
    ({"width_mult": -1.0}, r"params\.width_mult: must be in \(0, 1024\], got -1\.0"),
    ({"stages.9.depth": 2}, r"stages\.9\.depth: index 9 out of range"),
    ({"stages.0.colour": 2}, r"stages\.0\.colour: no such key"),
    ({"groups": 3}, r"groups=3 must divide"),
])
def test_bad_overrides(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        cnnprof.build_model("resnet50", "meta", **overrides)


def test_parse_override_types_values():
    assert parse_override("width_mult=0.75") == ("width_mult", 0.75)
    assert parse_override("stride_in_1x1=true") == ("stride_in_1x1", True)
    assert parse_override("activation=relu") == ("activation", "relu")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("width_mult")
