"""Standing property test: mutated configs, odd block arguments, odd `--set` values, mutated and corrupted device
profiles (every command that reads `--device-spec`), mutated design spaces (`search --space`) and odd per-model
settings and labels (`MODEL@key=value,label=NAME`, in every output format, CSV read back) give a result or a
one-line error (exit 2), never another exception or exit 1, within a time bound per example.

Deterministic (derandomize) and bounded so it runs in well under a minute on 2 cores; the larger local
fuzz that counts failures by kind is `python -m tests.fuzzing --cases 4000`.
"""
import copy
import csv
import io
import json
import random
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cnnprof.cli import app
from cnnprof.report.render import spreadsheet_safe
from tests.fuzzing import (DEVICE_COMMANDS, HUGE, LABEL_TEXTS, PROFILE_FILE, SET_KEYS, SET_VALUES, SETTING_KEYS, SMALL,
                           SPACE_FILES, TEXT_CASES, ZOO_FILES, block_arg_cases, block_case_config, corrupt_profile,
                           deadline, dump, model_arg, mutate, mutate_space, run_args, run_cli, run_config, write_space)

SECONDS = 60  # per example: generous for a loaded 2-core CI machine; a hang would run without bound


def fuzz(examples: int) -> settings:
    """Deterministic, bounded settings; the time bound is `deadline` below (hypothesis's would be flaky)."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


RAWS = {p.stem: yaml.safe_load(p.read_text()) for p in ZOO_FILES}


@pytest.mark.slow
@fuzz(80)
@given(name=st.sampled_from(sorted(RAWS)), seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 3))
def test_mutated_zoo_configs_give_a_result_or_a_one_line_error(tmp_path_factory, name, seed, rounds):
    raw = mutate(RAWS[name], random.Random(seed), rounds)
    with deadline(SECONDS):
        assert run_config(dump(raw), tmp=tmp_path_factory.mktemp("fuzz")) in ("ok", "error")


@pytest.mark.parametrize("index", range(len(TEXT_CASES)))
def test_hostile_yaml_texts_are_rejected_in_one_line(tmp_path, index):
    with deadline(SECONDS):
        assert run_config(TEXT_CASES[index], tmp=tmp_path) == "error"


@pytest.mark.slow
@fuzz(300)
@given(case=st.sampled_from(block_arg_cases()))
def test_every_block_argument_with_odd_values(case):
    with deadline(SECONDS):
        assert run_config(block_case_config(*case)) in ("ok", "error")


@pytest.mark.slow
@fuzz(60)
@given(key=st.sampled_from(SET_KEYS), value=st.sampled_from(SET_VALUES) | st.text(max_size=12),
       model=st.sampled_from(SMALL), cmd=st.sampled_from(["params", "flops"]))
def test_set_values_through_the_cli_exit_0_or_2(key, value, model, cmd):
    with deadline(SECONDS):
        assert run_cli(CliRunner(), app, cmd, model, f"{key}={value}") in (0, 2)


PROFILE = json.loads((Path(__file__).parent / "golden_cli" / "fixed_cpu_profile.json").read_text())
ODD = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, -1.0, 1e308, 1e-300]),
                st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _paths(node, prefix=()):
    """Every (path of keys) in a JSON tree."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))


PROFILE_PATHS = [p for p in _paths(PROFILE) if p]


@pytest.mark.slow
@fuzz(60)
@given(path=st.sampled_from(PROFILE_PATHS), value=ODD, drop=st.booleans())
def test_mutated_device_profiles_give_a_result_or_a_one_line_error(tmp_path_factory, path, value, drop):
    data = copy.deepcopy(PROFILE)
    node = data
    for key in path[:-1]:
        node = node[key]
    if drop:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    spec = tmp_path_factory.mktemp("profile") / "p.json"
    spec.write_text(json.dumps(data))
    with deadline(SECONDS):
        result = CliRunner().invoke(app, ["roofline", "resnet18", "--resolution", "32", "--by", "type",
                                          "--device-spec", str(spec), "--format", "json"])
    assert result.exit_code in (0, 2), result.stderr or repr(result.exception)
    assert result.exit_code == 0 or len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@fuzz(40)
@given(seed=st.integers(0, 2**32 - 1), command=st.sampled_from(DEVICE_COMMANDS),
       fmt=st.sampled_from(["table", "json", "csv"]))
def test_corrupted_device_profile_files_through_every_command(tmp_path_factory, seed, command, fmt):
    """Truncated, mis-encoded, re-typed, nested or huge-numbered profile JSON, read by roofline, compare --predict,
    device, sweep --predict and match: a result or one line (a lone surrogate is written as the bytes it stands
    for: invalid UTF-8)."""
    spec = tmp_path_factory.mktemp("profile") / "p.json"
    spec.write_bytes(corrupt_profile(PROFILE_FILE.read_text(), random.Random(seed)).encode("utf-8", "surrogatepass"))
    with deadline(SECONDS):
        run_args(CliRunner(), app, [*command, "--device-spec", str(spec), "--format", fmt])


SPACES = {p.stem: yaml.safe_load(p.read_text()) for p in SPACE_FILES}


@pytest.mark.slow
@fuzz(25)
@given(name=st.sampled_from(sorted(SPACES)), seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 3),
       metric=st.sampled_from(["macs", "params", "acts"]), stats=st.booleans())
def test_mutated_design_spaces_give_a_result_or_a_one_line_error(tmp_path_factory, name, seed, rounds, metric, stats):
    tmp = tmp_path_factory.mktemp("space")
    space = write_space(mutate_space(SPACES[name], random.Random(seed), rounds), tmp / "s.yaml")
    args = ["search", "--space", str(space), "--trials", "2", "--workers", "1", "--minimize", metric, "--seed", "0",
            "--resolution", "32", "--out", str(tmp / "out"), "--format", "json"]
    with deadline(SECONDS):
        run_args(CliRunner(), app, args + (["--stats", "--sampler", "random"] if stats else []))


TEXTS = st.sampled_from(LABEL_TEXTS) | st.text(max_size=8)


@pytest.mark.slow
@fuzz(60)
@given(model=st.sampled_from(["mobilenet_v1", "resnet18"]), label=TEXTS, suffix=TEXTS,
       pairs=st.lists(st.sampled_from([("width_mult", "0.5"), ("resolution", "64")])
                      | st.tuples(st.sampled_from(SETTING_KEYS), TEXTS), max_size=2),
       at=st.sampled_from(["@", "@", "@", "@@", " @"]), fmt=st.sampled_from(["csv", "csv", "json", "table", "markdown"]),
       to_file=st.booleans())
def test_per_model_settings_and_labels_in_every_format(tmp_path_factory, model, label, suffix, pairs, at, fmt,
                                                        to_file):
    """Odd keys, values and labels (separators, formula starts, controls, markup): a result or one line; a CSV, on
    stdout or written by --output, reads back as one row whose model cell is the JSON label, spreadsheet-safe."""
    arg = model_arg(model, [("label", label + suffix), *pairs], at)
    args = ["params", arg, "--format", fmt]
    out = tmp_path_factory.mktemp("labels") / "rows.csv"
    with deadline(SECONDS):
        result = run_args(CliRunner(), app, args + (["--output", str(out)] if to_file else []))
        if result.exit_code or fmt != "csv":
            return
        shown = json.loads(run_args(CliRunner(), app, ["params", arg, "--format", "json"]).stdout)[0]["model"]
    for text in (result.stdout, *([out.read_text()] if to_file else [])):
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert [r["model"] for r in rows] == [spreadsheet_safe(shown)]


# Numbers beyond float range (YAML and JSON read 10**400 exactly; float() of it raises): each was an internal error.
HUGE_CASES = {
    "--set": ["params", "mobilenet_v1", "--set", f"width_mult={HUGE}"],
    "MODEL@": ["params", f"mobilenet_v1@width_mult=-{HUGE}"],
    "space range": "width_mult: {type: float, low: 0.5, high: HUGE}",
    "space choices": "resolution: {type: categorical, choices: [HUGE, 32]}",
    "space multiplier": "stages.1.out_channels: {type: categorical, choices: [[1]], multiply: true}",
    "block argument": "stages:\n  - {block: inverted_residual, depth: 1, out_channels: 16, expand_ratio: HUGE}\n",
    "generator": "generator: {type: regnet, depth: 13, w_0: HUGE, w_a: 24.5, w_m: 2.5, group_width: 8}\n",
    "profile": "peak_flops",
}


@pytest.mark.parametrize("case", HUGE_CASES)
def test_numbers_beyond_float_range_are_one_line_errors(cli, tmp_path, case):
    args = HUGE_CASES[case]
    if case.startswith("space"):
        space = tmp_path / "s.yaml"
        space.write_text(f"base: mobilenet_v1\nknobs:\n  {args.replace('HUGE', str(HUGE))}\n")
        args = ["search", "--space", str(space), "--trials", "1", "--workers", "1", "--minimize", "macs", "--out",
                str(tmp_path / "out")]
    elif case == "profile":
        data = json.loads(PROFILE_FILE.read_text())
        data["peak_flops"]["float32"] = HUGE
        (tmp_path / "p.json").write_text(json.dumps(data))
        args = ["roofline", "mobilenet_v1", "--resolution", "32", "--device-spec", str(tmp_path / "p.json")]
    elif isinstance(args, str):
        base = "regnet_x_400mf" if case == "generator" else "mobilenet_v1"
        raw = yaml.safe_load((ZOO_FILES[0].parent / f"{base}.yaml").read_text())
        raw.update(yaml.safe_load(args.replace("HUGE", str(HUGE))))
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
        args = ["params", str(tmp_path / "c.yaml")]
    with deadline(SECONDS):
        result = cli(*args)
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert len(result.stderr.strip().splitlines()) == 1 and "internal error" not in result.stderr
