"""CLI robustness (issues 17 and 18): every bad input or failed write is one line on stderr, never a traceback.
Each test reproduces a failure the CLI had before its fix."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_roofline import FIXED

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "fixed.json"
    path.write_text(json.dumps(FIXED.to_json()))
    return str(path)


def _one_line(result, code: int) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# --- 1. stdout that cannot be written; --plot into a folder that is missing or read-only --------------------

@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["--help"], ["--version"], ["flops", "--help"]])
def test_help_and_version_into_a_full_device_are_one_line_exit_1(args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CNNPROF_DEBUG", None)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "cnnprof.cli", *args], stdout=full, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr, proc.stderr


def test_roofline_plot_into_a_missing_folder_is_refused_before_work(cli, spec_file, tmp_path):
    line = _one_line(cli("roofline", "resnet18", "--device-spec", spec_file, "--plot",
                         str(tmp_path / "nope" / "x.png")), 2)
    assert "no such folder" in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_roofline_plot_into_a_read_only_folder_is_refused(cli, spec_file, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        line = _one_line(cli("roofline", "resnet18", "--device-spec", spec_file, "--plot", str(ro / "x.png")), 2)
    finally:
        ro.chmod(0o700)
    assert "not writable" in line


def test_sweep_and_match_plot_into_a_missing_folder_is_refused(cli, tmp_path):
    bad = str(tmp_path / "nope" / "x.png")
    assert "no such folder" in _one_line(cli("sweep", "resnet18", "--set", "width_mult=0.5,1", "--plot", bad), 2)
    assert "no such folder" in _one_line(cli("match", "resnext50", "--to", "resnet50", "--vary", "width_per_group",
                                             "--plot", bad), 2)


def test_a_plot_write_that_fails_is_exit_1(cli, spec_file, tmp_path, monkeypatch):
    import matplotlib.figure

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    line = _one_line(cli("roofline", "resnet18", "--device-spec", spec_file, "--plot", str(tmp_path / "x.png")), 1)
    assert "cannot write" in line


# --- 2. a per-model key given twice --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["resnet50@width_mult=0.5,width_mult=0.25"], ["resnet50@label=a,label=b"],
                                  ["resnet50", "--set", "width_mult=0.5", "--set", "width_mult=0.25"]])
def test_a_key_given_twice_is_one_line_exit_2(cli, args):
    assert "given twice" in _one_line(cli("params", *args), 2)


def test_a_per_model_key_still_overrides_the_run_wide_one(cli):
    rows = cli.json("params", "resnet50@width_mult=0.25", "--set", "width_mult=0.5")
    assert rows[0]["model"] == "resnet50@width_mult=0.25"


# --- 3. numbers read strictly (YAML 1.1 read 1:2:3 as base 60) -------------------------------------------------

@pytest.mark.parametrize("bounds", ["1:2:3", "0x1:4", "1_0:20", "1e400:2", "nan:2", "1:inf"])
def test_match_range_is_two_plain_finite_numbers(cli, bounds):
    line = _one_line(cli("match", "resnext50", "--vary", "width_per_group", "--to", "resnet50", "--range", bounds), 2)
    assert "--range" in line and "LOW:HIGH" in line


def test_parse_range_keeps_ints_and_floats():
    from cnnprof.design.match import parse_range

    assert parse_range("1:128") == (1, 128) and isinstance(parse_range("1:128")[0], int)
    assert parse_range("0.1:2.0") == (0.1, 2.0) and parse_range("-1:1e2") == (-1, 100.0)


@pytest.mark.parametrize("target", ["0", "-5", "1e400", "inf", "nan", "1_000", "0x10", "15ms"])
def test_match_target_must_be_a_positive_finite_number(cli, target):
    line = _one_line(cli("match", "resnext50", "--vary", "width_per_group", "--target", target), 2)
    assert "--target" in line


def test_parse_target_units():
    from cnnprof.design.match import parse_target

    assert parse_target("macs", "400M") == 400e6 and parse_target("params", "0.5k") == 500
    assert parse_target("latency", "15ms") == pytest.approx(0.015)


# --- 3b. the documented input caps: 2^40 elements, resolution 32,768 ------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--batch-size", "1099511627776"], "more than 2^40"),
    (["--batch-size", "2000000000000"], "at most 2^40"),
    (["--resolution", "32769"], "--resolution 32769"),
])
def test_flops_inputs_over_the_documented_caps_are_refused(cli, args, words):
    assert words in _one_line(cli("flops", "resnet18", *args), 2)


def test_resolution_cap_is_checked_once_before_the_models(cli):
    assert "--resolution" in _one_line(cli("flops", "resnet18", "resnet50", "--resolution", "40000"), 2)


def test_resolution_at_the_cap_still_counts(cli):
    rows = cli.json("flops", "resnet18", "--resolution", "32768")
    assert rows[0]["input_shape"] == [1, 3, 32768, 32768]


def test_with_batch_and_resolution_bounds_the_result():
    from cnnprof.errors import CnnprofError
    from cnnprof.inputs import InputSpec, with_batch_and_resolution

    with pytest.raises(CnnprofError, match="2\\^40"):
        with_batch_and_resolution([InputSpec((1, 3, 224, 224))], 1 << 30, None)
    with pytest.raises(CnnprofError, match="32,768"):
        with_batch_and_resolution([InputSpec((1, 3, 224, 224))], 1, 1 << 15 + 1)


# --- 4. device options that would have no effect; --threads bounded as bench bounds it ------------------------

@pytest.mark.parametrize("extra, named", [
    (["--quick"], "--quick"), (["--threads", "1"], "--threads"), (["--cached"], "--cached"),
    (["--dtype", "float32"], "--dtype"), (["--device", "cpu"], "--device"),
    (["--quick", "--dtype", "bfloat16"], "--quick, --dtype"),
])
def test_device_spec_with_a_measuring_option_is_refused(cli, extra, named):
    line = _one_line(cli("device", "--device-spec", "h100", *extra), 2)
    assert named in line and "no effect with --device-spec" in line


def test_device_spec_alone_still_shows_the_datasheet(cli):
    assert cli("device", "--device-spec", "h100").exit_code == 0


def test_device_cached_quick_is_refused(cli):
    assert "--quick has no effect with --cached" in _one_line(cli("device", "--cached", "--quick"), 2)


def test_device_threads_above_the_cores_is_refused_as_bench_refuses_it(cli):
    too_many = str((os.cpu_count() or 1) + 1)
    line = _one_line(cli("device", "--threads", too_many), 2)
    assert f"--threads {too_many}" in line and "cores" in line
    assert _one_line(cli("bench", "resnet18", "--threads", too_many), 2) == line


# --- 5. the device cache is keyed by the calibration dtype ----------------------------------------------------

def test_a_bfloat16_profile_no_longer_overwrites_the_float32_one():
    from dataclasses import replace

    from cnnprof.predict.device import cache_path, cached_profile, save_profile

    bf16 = replace(FIXED, calibration_dtype="bfloat16", name="bf16 CPU")
    assert save_profile(FIXED) == cache_path("cpu", "float32")
    assert save_profile(bf16) == cache_path("cpu", "bfloat16") != cache_path("cpu", "float32")
    assert cached_profile("cpu") == FIXED and cached_profile("cpu", dtype="float32") == FIXED
    assert cached_profile("cpu", dtype="bfloat16") == bf16
    assert cached_profile("cpu", dtype="float16") is None


def test_an_old_cache_file_still_serves_float32_only():
    from dataclasses import replace

    from cnnprof.predict.device import cache_path, cached_profile

    old = cache_path("cpu", legacy=True)
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps(FIXED.to_json()))
    assert cached_profile("cpu") == FIXED and cached_profile("cpu", dtype="bfloat16") is None
    old.write_text(json.dumps(replace(FIXED, calibration_dtype="bfloat16").to_json()))  # the overwrite bug's file
    assert cached_profile("cpu") is None


def test_device_cached_looks_up_the_dtype_asked_for(cli):
    from cnnprof.predict.device import save_profile

    save_profile(FIXED)
    assert cli("device", "--cached").exit_code == 0
    line = _one_line(cli("device", "--cached", "--dtype", "bfloat16"), 2)
    assert "no cached profile for cpu calibrated at bfloat16" in line and "--dtype bfloat16" in line


def test_resolve_profile_measures_at_the_dtype_predicted_for():
    from dataclasses import replace

    from cnnprof.predict.device import resolve_profile, save_profile

    save_profile(FIXED)
    bf16 = replace(FIXED, calibration_dtype="bfloat16")
    assert resolve_profile(None, "cpu", lambda: bf16, dtype="bfloat16") is bf16
    assert resolve_profile(None, "cpu", lambda: bf16) == FIXED
