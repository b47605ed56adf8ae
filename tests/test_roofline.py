"""Device profiles, the roofline placement, predictions, and the device / roofline commands.
Deterministic: a fixed injected profile, tiny calibrations, no timed assertions."""
import json
import struct

import pytest

from cnnprof.predict.device import DeviceProfile, TypeFit, cached_profile, datasheet, save_profile
from cnnprof.predict.latency import calibrate, fit_type, predict_latency
from tests.conftest import cuda

# 100 GFLOP/s and 10 GB/s: ridge at 10 FLOP/byte; 5 us per op.
FIXED = DeviceProfile(device="cpu", name="fixed test CPU", torch_version="x", threads=1, source="file",
                      peak_flops={"float32": 100e9}, bandwidth=10e9, op_overhead_s=5e-6, module_overhead_s=1e-6,
                      view_overhead_s=2e-7)


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "fixed.json"
    path.write_text(json.dumps(FIXED.to_json()))
    return str(path)


def test_roofline_time_of_one_op_is_max_of_compute_and_memory_plus_overhead():
    from torch import nn

    conv = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False))
    p = predict_latency(conv, (1, 16, 8, 8), FIXED)
    (op,) = p.ops
    flops = 2 * 32 * 64 * 16 * 9
    nbytes = 4 * (16 * 64 + 32 * 16 * 9 + 32 * 64)
    assert (op.call.flops, op.call.bytes) == (flops, nbytes)
    assert op.roofline_s == pytest.approx(max(flops / 100e9, nbytes / 10e9) + 5e-6)
    assert op.attainable == pytest.approx(min(100e9, flops / nbytes * 10e9))
    assert p.calibrated_s is None and p.best_s() == p.roofline_s


def test_mobilenet_v2_depthwise_and_pointwise_on_opposite_sides_of_the_ridge(cli, spec_file):
    p = predict_latency("mobilenet_v2", None, FIXED)
    types = {r["name"]: r for r in p.by_type()}
    assert types["depthwise conv"]["intensity"] < p.ridge <= types["pointwise conv"]["intensity"]
    assert (types["depthwise conv"]["bound"], types["pointwise conv"]["bound"]) == ("memory", "compute")
    out = cli("roofline", "mobilenet_v2", "--by", "type", "--device-spec", spec_file).stdout
    assert "depthwise conv: 1.7 FLOP/B, below the ridge (10.0 FLOP/B): memory-bound" in out
    assert "pointwise conv: 14.9 FLOP/B, above the ridge (10.0 FLOP/B): compute-bound" in out
    assert "1 MAC = 2 FLOPs" in out


def test_calibrated_prediction_uses_the_type_fits():
    fits = {k: TypeFit(1e-5, 50e9, 5e9, 3, 0.0) for k in ("conv", "pointwise conv", "batch norm", "activation")}
    prof = DeviceProfile(**{**FIXED.__dict__, "calibration": fits})
    p = predict_latency("resnet18", (1, 3, 64, 64), prof)
    expected = sum(fits[o.op_type].time(o.call.flops, o.call.bytes) if o.op_type in fits else o.roofline_s for o in p.ops)
    assert p.calibrated_s == pytest.approx(expected + p.module_calls * 1e-6 + p.memory.free_calls * 2e-7)
    assert p.memory.free_calls > 0  # flatten before the classifier
    assert "depthwise conv" not in p.uncalibrated_types and "linear" in p.uncalibrated_types


def test_fit_type_recovers_a_known_cost_model():
    truth = TypeFit(3e-6, 40e9, 8e9, 0, 0.0)
    samples = [(f, b, truth.time(f, b)) for f, b in [(1e6, 1e6), (1e8, 2e6), (1e5, 4e7), (5e7, 5e7), (0, 1e3)]]
    fit = fit_type(samples)
    assert fit.overhead_s == pytest.approx(3e-6, rel=1e-6)
    assert fit.flops_per_s == pytest.approx(40e9, rel=1e-6) and fit.bytes_per_s == pytest.approx(8e9, rel=1e-6)
    assert fit.median_error == pytest.approx(0, abs=1e-9)


def test_a_profile_written_before_the_op_type_rename_loads_and_predicts_the_same():
    """tests/golden_cli/fixed_cpu_profile.json was written before 'op kind' became 'op type' (KindFit -> TypeFit):
    the file format did not change (calibration keyed by op type name, fields of TypeFit), so it loads, writes
    back identically, and predicts what roofline_by_type.json holds (regenerated only for deliberate model changes)."""
    from pathlib import Path

    from cnnprof.predict import microbench
    from cnnprof.predict.device import load_profile_file

    golden = Path(__file__).parent / "golden_cli"
    written = json.loads((golden / "fixed_cpu_profile.json").read_text())
    profile = load_profile_file(golden / "fixed_cpu_profile.json")
    assert profile.to_json() | {"source": "measured"} == written  # loading marks the source as "file"
    assert set(profile.calibration) <= {op_type for op_type, _, _ in microbench.grid()}
    assert all(isinstance(fit, TypeFit) for fit in profile.calibration.values())
    frozen = {r["model"]: r for r in json.loads((golden / "roofline_by_type.json").read_text())}
    p = predict_latency("mobilenet_v2", None, profile)
    assert (1e3 * p.roofline_s, 1e3 * p.calibrated_s) == (frozen["mobilenet_v2"]["roofline_ms"],
                                                          frozen["mobilenet_v2"]["calibrated_ms"])
    assert p.uncalibrated_types == ("linear",)


def test_tiny_calibration_and_ctrl_c_keeps_what_was_measured(monkeypatch):
    import cnnprof.predict.microbench as mb

    grid = mb.grid()
    monkeypatch.setattr(mb, "grid", lambda: [g for g in grid if g[0] == "activation"][:3]
                        + [g for g in grid if g[0] == "element-wise"][:2])
    prof = calibrate("cpu", quick=True)
    assert prof.complete and prof.source == "measured" and set(prof.calibration) == {"activation"}
    assert prof.peak("float32") > 0 and prof.bandwidth > 0 and prof.op_overhead_s > 0

    def interrupt(label, done, total):
        if label.startswith("micro-benchmark"):
            raise KeyboardInterrupt

    partial = calibrate("cpu", quick=True, on_step=interrupt)
    assert not partial.complete and partial.calibration == {} and partial.peak("float32") > 0


def test_profile_cache_round_trip_keyed_by_torch_and_threads():
    import torch

    assert cached_profile("cpu") is None
    path = save_profile(FIXED)
    assert torch.__version__ in path.name and f"-t{torch.get_num_threads()}" in path.name
    assert cached_profile("cpu") == FIXED


def test_device_command_datasheet_and_errors(cli, spec_file):
    row = cli.json("device", "--device-spec", "h100")[0]
    assert row["source"] == "datasheet" and row["bandwidth"] == 3.35e12
    assert "DATASHEET" in cli("device", "--device-spec", "a100").stdout
    assert datasheet("H100").peak("float16") == 989e12
    bad = cli("device", "--device-spec", "tpu9")
    assert bad.exit_code == 2 and "unknown --device-spec 'tpu9'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    none = cli("device", "--cached")
    assert none.exit_code == 2 and "no cached profile" in none.stderr
    assert cli.json("device", "--device-spec", spec_file)[0]["peak_flops"] == {"float32": 100e9}


def test_roofline_plot_is_a_valid_png(cli, spec_file, tmp_path):
    out = tmp_path / "roof.png"
    result = cli("roofline", "resnet50", "mobilenet_v2", "--device-spec", spec_file, "--plot", str(out))
    assert result.exit_code == 0, result.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 500
    import matplotlib.image

    assert matplotlib.image.imread(str(out)).std() > 0  # decodes, and is not a blank canvas
    assert cli("roofline", "resnet18", "--device-spec", spec_file, "--plot", "x.gif").exit_code == 2


def test_roofline_formats_carry_every_number(cli, spec_file):
    rows = cli.json("roofline", "resnet18", "mobilenet_v2", "--by", "type", "--device-spec", spec_file)
    keys = {"macs", "bytes", "intensity", "attainable", "bound", "roofline_ms", "time_share", "macs_share"}
    for row in rows:
        assert {"acts", "bytes", "intensity", "roofline_ms", "ridge", "ridge_notes"} <= set(row)
        assert all(keys <= set(r) for r in row["by_type"])
        assert sum(r["time_share"] for r in row["by_type"]) == pytest.approx(1.0)
        assert sum(r["roofline_ms"] for r in row["by_type"]) == pytest.approx(row["roofline_ms"])
    csv_text = cli("roofline", "resnet18", "--by", "type", "--device-spec", spec_file, "--format", "csv").stdout
    header = csv_text.splitlines()[0].split(",")
    assert keys <= set(header) and "acts" in header
    md = cli("roofline", "resnet18", "--by", "stage", "--device-spec", spec_file, "--format", "markdown").stdout
    assert "| Stage | MACs | Bytes | FLOP/B | Attainable GFLOP/s | Bound |" in md and "| stage4 |" in md


def test_roofline_takes_the_inputs_and_per_model_settings_of_every_command(cli, spec_file):
    rows = cli.json("roofline", "resnet18", "resnet18@width_mult=0.5,label=half", "--input-shape", "1,3,64,64",
                    "--by", "type", "--device-spec", spec_file)
    assert [r["model"] for r in rows] == ["resnet18", "half"] and rows[1]["overrides"] == {"width_mult": 0.5}
    small = predict_latency("resnet18", (1, 3, 64, 64), FIXED)
    assert rows[0]["roofline_ms"] == pytest.approx(1e3 * small.roofline_s)
    assert rows[1]["roofline_ms"] < rows[0]["roofline_ms"]


def test_compare_predict_without_running(cli, spec_file):
    rows = cli.json("compare", "resnet50", "mobilenet_v2", "--predict", "--device-spec", spec_file)
    assert rows[0]["predicted_ms"] == pytest.approx(1e3 * predict_latency("resnet50", None, FIXED).roofline_s)
    assert rows[1]["predicted_ratio"] == pytest.approx(rows[1]["predicted_ms"] / rows[0]["predicted_ms"])
    assert "Predicted (ms)" in cli("compare", "resnet50", "mobilenet_v2", "--predict", "--device-spec", spec_file).stdout


def test_bench_breakdown_shows_predicted_time_with_a_cached_profile(cli):
    import torch

    cli("bench", "resnet18", "--resolution", "32", "--warmup", "0", "--min-time", "0.01", "--threads", "1")
    assert torch.get_num_threads() == 1
    save_profile(FIXED)
    rows = cli.json("bench", "resnet18", "--resolution", "32", "--warmup", "0", "--min-time", "0.01",
                    "--threads", "1", "--breakdown")
    parts = {p["type"]: p for p in rows[0]["breakdown"]}
    assert parts["conv 3x3"]["predicted_ms"] > 0
    assert sum(p["predicted_share"] or 0 for p in parts.values()) == pytest.approx(1.0, abs=0.05)


@cuda
def test_cuda_quick_calibration_and_prediction():
    prof = calibrate("cuda", quick=True, micro=False)
    assert prof.device == "cuda" and prof.peak("float32") > 0 and prof.bandwidth > 0
    assert predict_latency("resnet18", None, prof).roofline_s > 0


@pytest.mark.slow
def test_no_micro_benchmark_is_a_zoo_layer():
    """Leave-one-model-out by construction: the calibration grid shares no layer with any zoo model."""
    import torch

    from cnnprof.predict.microbench import grid as _grid
    from cnnprof.counting.traffic import TrafficCounter, analyze_memory
    from cnnprof.models.spec import resolve
    from tests.conftest import ZOO

    def signature(c):
        return (c.type, c.op, c.shape, c.kernel, c.groups, c.bytes_read)

    grid = set()
    for _, _, make in _grid():
        counter = TrafficCounter(None, 4)
        fn = make("meta", torch.float32)
        with torch.no_grad(), counter:
            fn()
        grid |= {signature(c) for c in counter.calls}
    for name in ZOO:
        zoo = {signature(c) for c in analyze_memory(resolve(name)).calls}
        assert not grid & zoo, (name, grid & zoo)


def test_model_level_correction_recovers_known_factors_and_splits_the_prediction():
    from cnnprof.predict.latency import fit_correction, split_calibrated

    samples = [(c, r, 1.2 * c + 2.0 * r) for c, r in [(10, 1), (3, 4), (50, 20), (1, 1)]]
    assert fit_correction(samples) == pytest.approx((1.2, 2.0))
    p = predict_latency("mobilenet_v2", (1, 3, 64, 64), FIXED)
    compute, rest = split_calibrated(p)
    assert compute > 0 and rest > 0 and compute + rest == pytest.approx(p.roofline_s)


def test_an_interrupted_cached_profile_is_used_and_flagged(cli):
    import dataclasses

    save_profile(dataclasses.replace(FIXED, complete=False))
    result = cli("roofline", "resnet18", "--by", "type")
    assert result.exit_code == 0 and "interrupted" in result.stderr and "fixed test CPU" in result.stdout
