"""Config loading, overrides and every kind of bad config: one-line errors naming file and key."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cnnprof
from cnnprof.models.config import load_config, parse_override
from cnnprof.models.zoo import zoo_path
from cnnprof.errors import ConfigError, ModelSpecError
from cnnprof.models.yaml_input import MAX_FILE_BYTES

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


# ----------------------------------------------------------------------------- issue 10: bad input

BOTTLENECK = MINIMAL.replace("block: basic, depth: 1, out_channels: 16, stride: 1",
                             "block: bottleneck, depth: 1, out_channels: 64, EXTRA")
CONVNEXT = MINIMAL.replace("block: basic, depth: 1, out_channels: 16, stride: 1", "block: convnext, depth: 1, out_channels: 16, EXTRA")


@pytest.mark.parametrize("text, pattern", [
    # accepted before and silently changed the counts
    (MINIMAL.replace("stem: {", "stem: {bias: 'false', "), r"stem\.bias: expected true or false, got 'false'"),
    (BOTTLENECK.replace("EXTRA", "se_ratio: -0.25"), r"stages\[0\]\.se_ratio: must be in \[0, 1\), got -0\.25"),
    (BOTTLENECK.replace("EXTRA", "se_ratio: 0.25, se_divisor: 0"), r"stages\[0\]\.se_divisor: must be in \[1, "),
    (MINIMAL.replace("stem: {out_channels: 16, kernel_size: 3", "stem: {out_channels: 16, kernel_size: 0"),
     r"stem\.kernel_size: must be > 0, got 0"),
    (MINIMAL.replace("stem: {", "stem: {padding: -1, "), r"stem\.padding: must be >= 0, got -1"),
    (CONVNEXT.replace("EXTRA", "kernel_size: 4"), r"stages\[0\]\.kernel_size: must be odd for block 'convnext'"),
    (MINIMAL.replace("stem: {", "stem: {pool: {type: max, kernel_size: 3, padding: 2}, "),
     r"stem\.pool\.padding: must be at most half the kernel size \(1\), got 2"),
    (MINIMAL.replace("depth: 1", "depth: 1, depth: 2"), r"net\.yaml:6:\d+: key 'depth' given twice"),
    # failed only inside forward or as an internal error
    (BOTTLENECK.replace("EXTRA", "group_width: 0"), r"stages\[0\]\.group_width: must be in \[1, "),
    (BOTTLENECK.replace("EXTRA", "groups: true"), r"stages\[0\]\.groups: expected an integer, got True"),
    (BOTTLENECK.replace("EXTRA", "bottleneck_ratio: -0.5"), r"stages\[0\]\.bottleneck_ratio: must be in \(0, 64\]"),
    (BOTTLENECK.replace("EXTRA", "bottleneck_ratio: .nan"), r"stages\[0\]\.bottleneck_ratio: expected a finite number"),
    (BOTTLENECK.replace("EXTRA", "bottleneck_ratio: .inf"), r"stages\[0\]\.bottleneck_ratio: expected a finite number"),
    (BOTTLENECK.replace("EXTRA", "bottleneck_ratio: 0.001"), r"stages\[0\]\.bottleneck_ratio: 0\.001 x out_channels=64 gives 0"),
    (BOTTLENECK.replace("EXTRA", "stride_in_1x1: 'no'"), r"stages\[0\]\.stride_in_1x1: expected true or false"),
    (BOTTLENECK.replace("EXTRA", "activation: 3"), r"stages\[0\]\.activation: expected a string, got 3"),
    (MINIMAL.replace("depth: 1, out_channels: 16", "depth: 1, out_channels: 16, kernel_size: false").replace("basic", "conv"),
     r"stages\[0\]\.kernel_size: expected an integer, got False"),
    (MINIMAL.replace("block: basic", "block: conv, padding: 0.5"), r"stages\[0\]\.padding: expected an integer, got 0\.5"),
    (MINIMAL.replace("{width_mult: 1.0}", "{width_mult: .nan}"), r"params\.width_mult: expected a boolean, a finite number or a string, got nan"),
    (MINIMAL.replace("{width_mult: 1.0}", "{width_mult: !!float x}"), r"net\.yaml: invalid YAML value"),
    (MINIMAL.replace("out_channels: 16, stride: 1", "out_channels: {by: {a: 1}, cases: {}}, stride: 1"),
     r"'by' must name a param and 'cases' be a mapping"),
    (MINIMAL + "1: x\n2.5: y\n", r"net\.yaml: 1: unknown key"),
    (MINIMAL.replace("stride: 1}", "stride: 1, 7: x}"), r"stages\[0\]\.7: not an argument name"),
    (MINIMAL.replace("out_channels: 16, stride: 1", "out_channels: 10000000, stride: 1"),
     r"stages\[0\]\.out_channels: must be at most 1,048,576"),
    (MINIMAL.replace("depth: 1", "depth: 100000"), r"stages\[0\]\.depth: must be at most 1,000"),
])
def test_issue10_bad_values_are_one_line_errors_with_the_key(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        cnnprof.count_flops(str(path))
    assert "\n" not in str(info.value) and len(str(info.value)) <= 300 + len(str(path))


@pytest.mark.parametrize("levels", [500, 700, 999, 5000])
def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path, levels):
    for nest in ("[" * levels + "]" * levels, "{a: " * levels + "1" + "}" * levels):
        path = write(tmp_path, f"stages: {nest}\nhead: {{}}\n")
        with pytest.raises(ConfigError, match=r"nested too deeply|exceeded maximum nesting depth"):
            load_config(path)


def test_billion_laughs_is_rejected_before_expansion(tmp_path):
    rows = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
    text = "\n".join(rows) + "\nstages: [{block: basic, depth: 1, out_channels: 8, x: *i}]\nhead: {}\n"
    assert len(text) < 1100  # 9^9 = 387 million values once expanded
    with pytest.raises(ConfigError, match="more than 100,000 values once YAML aliases are expanded"):
        load_config(write(tmp_path, text))


def test_self_referencing_alias_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(write(tmp_path, "params: &p {width_mult: 1.0, me: *p}\nstages: []\nhead: {}\n"))


def test_huge_file_and_fifo_are_rejected_naming_the_file(tmp_path):
    big = write(tmp_path, "description: " + "x" * (2 << 20) + "\n", "big.yaml")
    with pytest.raises(ConfigError, match=r"big\.yaml: file is 2,097,166 bytes; configs are limited to 1,048,576"):
        load_config(big)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"pipe\.yaml: is a FIFO; a config must be a regular YAML file"):
        load_config(fifo)


@pytest.mark.parametrize("overrides, pattern", [
    ({"depth_mult": 100000.0}, r"params\.depth_mult: must be in \(0, 1024\], got 100000\.0"),
    ({"depth_mult": 200.0}, r"stages\[\d\]\.depth: the model would have more than 1,000 blocks"),
    ({"stages.0.depth": 100000}, r"stages\[0\]\.depth: must be at most 1,000, got 100000"),
    ({"width_mult": 1000.0}, r"out_channels: .* channels, more than the limit of 1,048,576"),
    ({"resolution": 10**9}, r"params\.resolution: must be at most 32,768"),
    ({"se_ratio": -0.25}, r"params\.se_ratio: must be in \[0, 1\), got -0\.25"),
    ({"se_ratio": float("nan")}, r"params\.se_ratio: expected a finite number, got nan"),
    ({"stride_in_1x1": "false"}, r"params\.stride_in_1x1: expected a boolean \(true/false/yes/no\), got 'false'"),
    ({"groups": 2.5}, r"params\.groups: expected an integer, got 2\.5"),
])
def test_overrides_that_would_explode_or_change_numbers(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        cnnprof.build_model("resnet50", "meta", **overrides)


def test_huge_inputs_are_one_line_errors_before_building():
    from cnnprof.errors import CnnprofError

    for shape in [(10**14, 3, 224, 224), (1, 3, 10**8, 10**8)]:
        with pytest.raises(CnnprofError, match=r"has more than 2\^40 .* elements; reduce the batch size"):
            cnnprof.count_flops("resnet18", shape)


@pytest.mark.parametrize("text, value", [
    ("1e-1", 0.1), ("0.5e0", 0.5), (".5", 0.5), ("2.", 2.0), ("-3", -3), ("1_000", 1000), ("0", 0),
    ("true", True), ("Yes", True), ("on", True), ("false", False), ("no", False), ("OFF", False),
    ("null", None), ("~", None), ("none", "none"), ("relu", "relu"), ("'1.5'", "1.5"), ("[1, 2]", [1, 2]), ("", ""),
    ("!!float x", "!!float x"), ("&a [*a]", "&a [*a]"),
])
def test_set_numbers_parse_as_users_write_them(text, value):
    assert parse_override(f"k={text}") == ("k", value)


def test_set_scientific_notation_changes_the_count():
    assert load_config(zoo_path("mobilenet_v1"), dict([parse_override("width_mult=0.5e0")])).param("width_mult") == 0.5
    half = cnnprof.count_params(cnnprof.build_model("mobilenet_v1", "meta", width_mult=0.5)).total
    assert cnnprof.count_params(cnnprof.build_model("mobilenet_v1", "meta", width_mult=parse_override("w=5e-1")[1])).total == half


def test_set_errors_say_the_expected_type_in_words(cli):
    result = cli("params", "resnet50", "--set", "width_mult=abc")
    assert result.exit_code == 2
    assert "params.width_mult: expected a number (float), got 'abc'" in result.stderr
    result = cli("params", "resnet50", "--set", "stride_in_1x1=maybe")
    assert "expected a boolean (true/false/yes/no), got 'maybe'" in result.stderr
    result = cli("params", "resnet50", "--set", "stride_in_1x1=yes", "--format", "json")
    assert result.exit_code == 0


def test_error_lines_are_capped_and_never_echo_whole_values(tmp_path):
    path = write(tmp_path, MINIMAL.replace("head: {pool: avg}", "head: {pool: '" + "x" * 5000 + "'}"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(str(info.value)) < 200 + len(str(path)) and "x" * 100 not in str(info.value)


def test_config_cache_keys_on_content_not_mtime(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert len(load_config(path).stages[0].blocks) == 1
    stat = path.stat()
    path.write_text(MINIMAL.replace("depth: 1", "depth: 2"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime, as within one clock tick
    assert len(load_config(path).stages[0].blocks) == 2


def _zoo(tmp_path, monkeypatch, files: dict):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for name, text in files.items():
        (zoo / name).write_text(text)
    monkeypatch.setattr("cnnprof.models.zoo.CONFIG_DIR", zoo)
    return zoo


def test_config_dir_missing(tmp_path, monkeypatch, cli):
    monkeypatch.setattr("cnnprof.models.zoo.CONFIG_DIR", tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"nope: not a directory of zoo configs"):
        cnnprof.list_models()
    result = cli("params", "resnet18")
    assert result.exit_code == 2 and "nope: not a directory of zoo configs" in result.stderr


def test_config_dir_duplicate_alias_names_both_files_not_a_redirect(tmp_path, monkeypatch):
    _zoo(tmp_path, monkeypatch, {"a.yaml": MINIMAL.replace("name: tiny", "name: a"),
                                 "b.yaml": MINIMAL.replace("name: tiny", "name: b\naliases: [A]")})
    with pytest.raises(ConfigError, match=r"b\.yaml: name or alias 'a' is already used by .*a\.yaml"):
        cnnprof.build_model("a", "meta")


def test_config_dir_with_fifo_or_huge_file(tmp_path, monkeypatch):
    zoo = _zoo(tmp_path, monkeypatch, {"a.yaml": MINIMAL})
    os.mkfifo(zoo / "p.yaml")
    with pytest.raises(ConfigError, match=r"p\.yaml: is a FIFO"):
        cnnprof.list_models()
    (zoo / "p.yaml").unlink()
    (zoo / "big.yaml").write_text("#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(ConfigError, match=r"big\.yaml: file is 1,048,577 bytes"):
        cnnprof.list_models()


def test_config_dir_env_var_missing_dir_in_a_fresh_process(tmp_path):
    env = {**os.environ, "CNNPROF_CONFIG_DIR": str(tmp_path / "absent")}
    proc = subprocess.run([sys.executable, "-m", "cnnprof.cli", "list"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'absent'} ($CNNPROF_CONFIG_DIR): not a directory of zoo configs"


def test_no_import_cycle_between_config_and_models():
    code = ("import sys, cnnprof.models.regnet, cnnprof.models.rounding, cnnprof.models.config; "
            "assert 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
    for module in ("regnet", "rounding"):
        tree = ast.parse((Path(cnnprof.__file__).parent / "models" / f"{module}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "cnnprof.models.config" not in imported


def test_model_spec_naming_a_fifo_is_an_error_not_a_hang(tmp_path, cli):
    os.mkfifo(tmp_path / "pipe.yaml")
    result = cli("params", str(tmp_path / "pipe.yaml"), "resnet18", "--format", "json")
    assert result.exit_code == 2
    assert "pipe.yaml: is a FIFO; a config must be a regular YAML file" in result.stderr
    assert [row["model"] for row in json.loads(result.stdout)] == ["resnet18"]
