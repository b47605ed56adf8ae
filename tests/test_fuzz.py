"""Standing property test: mutated configs, odd block arguments, odd `--set` values and mutated device profiles
give a result or a one-line error (exit 2), never another exception or exit 1, within a time bound per example.

Deterministic (derandomize) and bounded so it runs in well under a minute on 2 cores; the larger local
fuzz that counts failures by kind is `python -m tests.fuzzing --cases 4000`.
"""
import copy
import json
import random
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cnnprof.cli import app
from tests.fuzzing import (SET_KEYS, SET_VALUES, SMALL, TEXT_CASES, ZOO_FILES, block_arg_cases, block_case_config,
                           deadline, dump, mutate, run_cli, run_config)

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
