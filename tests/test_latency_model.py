"""The table of measured layers (cnnprof.predict.lut) and the latency model over it: keys, recording, filling,
the cache, predictions that say where their time comes from, --threads and bench's shares of the peak.
Deterministic: layer times come from a fake timer (a function of the layer's own counts), never the clock,
except one test that only checks a real measurement is a positive number."""
import dataclasses
import json

import pytest
import torch
from torch import nn

from cnnprof.counting.traffic import analyze_memory
from cnnprof.predict import lut
from cnnprof.predict.device import DeviceProfile, TypeFit, cache_path, save_profile
from cnnprof.predict.latency import predict_latency, predict_ops

FITS = {k: TypeFit(1e-5, 50e9, 5e9, 3, 0.0) for k in ("conv", "pointwise conv", "batch norm", "activation")}


def profile(threads: int = 1, source: str = "measured", **changes) -> DeviceProfile:
    return DeviceProfile(device="cpu", name="fixed test CPU", torch_version=torch.__version__, threads=threads,
                         source=source, peak_flops={"float32": 100e9}, bandwidth=10e9, op_overhead_s=5e-6,
                         module_overhead_s=1e-6, view_overhead_s=2e-7, calibration=dict(FITS), **changes)


def fake_time(layer: lut.Layer, *_args, **_kwargs) -> float:
    """A deterministic 'measurement': 1 us plus 1 ns per 100 bytes moved plus 1 ns per 1000 FLOPs."""
    return 1e-6 + layer.call.bytes * 1e-11 + layer.call.flops * 1e-12


def fake_timing(monkeypatch, seen: list | None = None) -> None:
    """Layers 'measured' with fake_time, alone or in their network's order; `seen` hears every key timed."""
    def alone(layer, *_args, **_kwargs):
        if seen is not None:
            seen.append(layer.key)
        return fake_time(layer)

    def in_order(recorder, device, dtype, keys, *_args, **_kwargs):
        return {key: alone(recorder.layers[key]) for key in keys}

    monkeypatch.setattr(lut, "measure_layer", alone)
    monkeypatch.setattr(lut, "measure_in_order", in_order)


class Shuffle(nn.Module):
    """ShuffleNet V2's unit in small: split, branch, concatenate, channel shuffle (the data-movement ops)."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(c // 2, c // 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(),
                                    nn.Conv2d(c // 2, c // 2, 3, padding=1, groups=c // 2, bias=False))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        out = torch.cat([a, self.branch(b)], 1)
        n, c, h, w = out.shape
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Shuffle(), Shuffle(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def filled(model, shape=(1, 3, 16, 16), threads: int = 1, keep=lambda layer: True) -> lut.LayerTable:
    table = lut.LayerTable("cpu", "float32", threads)
    layers = [layer for layer in lut.record_layers(model, (shape,)) if keep(layer)]
    table.times.update((layer.key, fake_time(layer)) for layer in layers)
    return table


def test_every_op_call_of_the_trace_has_its_layer_recorded_once():
    model = tiny()
    layers = lut.record_layers(model, ((1, 3, 16, 16),))
    calls = analyze_memory(model, (1, 3, 16, 16)).calls
    keys = [layer.key for layer in layers]
    assert len(keys) == len(set(keys))  # distinct layers only: the two Shuffle units share theirs
    assert {lut.layer_key(c) for c in calls} == set(keys)
    assert len(calls) > len(keys)
    ops = {layer.call.op for layer in layers}
    assert {"convolution", "cat", "clone", "relu", "mean", "addmm"} <= ops  # the copies are layers too


def test_a_recorded_layer_runs_alone_on_real_tensors_of_its_shapes():
    (cat,) = [layer for layer in lut.record_layers(tiny(), ((2, 3, 16, 16),)) if layer.call.op == "cat"]
    out = cat.make("cpu", torch.float32)()
    assert tuple(out.shape) == cat.call.shape == (2, 8, 16, 16)
    shuffle = next(layer for layer in lut.record_layers(tiny(), ((2, 3, 16, 16),)) if layer.call.op == "clone")
    spec = shuffle.args[0]  # the channel shuffle copies a transposed view: its strides are recorded and remade
    assert spec.stride != torch.empty(spec.shape).stride()
    assert tuple(shuffle.make("cpu", torch.float32)().shape) == spec.shape


def test_keys_differ_in_every_shape_fact():
    a = lut.record_layers(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1)), ((1, 4, 8, 8),))[0]
    for other in (nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.Conv2d(4, 8, 3, padding=1, stride=2),
                  nn.Conv2d(4, 8, 1), nn.Conv2d(4, 16, 3, padding=1)):
        assert lut.record_layers(nn.Sequential(other), ((1, 4, 8, 8),))[0].key != a.key
    assert lut.record_layers(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1)), ((1, 4, 8, 8),))[0].key == a.key


def test_fill_measures_only_what_is_missing_and_keeps_it_after_ctrl_c():
    layers = lut.record_layers(tiny(), ((1, 3, 16, 16),))
    table = lut.LayerTable("cpu", "float32", 1)
    table.times[layers[0].key] = 1.0  # measured before: not again
    seen = []
    assert lut.fill(table, layers, timer=lambda fn, *a, **k: seen.append(fn) or 2e-6) == len(layers) - 1
    assert len(seen) == len(layers) - 1 and table.times[layers[0].key] == 1.0

    calls = []

    def interrupted(fn, *a, **k):
        calls.append(fn)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return 3e-6

    fresh = lut.LayerTable("cpu", "float32", 1)
    assert lut.fill(fresh, layers, timer=interrupted) == 2 and len(fresh.times) == 2


def test_a_real_measurement_is_a_positive_time():
    layer = lut.record_layers(nn.Sequential(nn.Conv2d(4, 4, 1)), ((1, 4, 4, 4),))[0]
    assert 0 < lut.measure_layer(layer, "cpu", "float32", min_time=0.0) < 1.0


def test_a_fully_measured_model_is_the_sum_of_its_layers_plus_the_calibrated_overheads():
    model = tiny()
    prof = dataclasses.replace(profile(), layers=filled(model))
    p = predict_latency(model, (1, 3, 16, 16), prof)
    expected = sum(fake_time(lut.Layer(lut.layer_key(o.call), o.call, None, (), {})) for o in p.ops)
    overheads = p.module_calls * 1e-6 + p.memory.free_calls * 2e-7
    assert p.predicted_s == pytest.approx(expected + overheads) and p.best_s() == p.predicted_s
    assert {o.source for o in p.ops} == {"measured"} and p.measured
    sources = p.time_sources()
    assert sources["calibrated"] == sources["roofline"] == 0 and sources["overhead"] == pytest.approx(overheads)
    assert p.calibrated_s != p.predicted_s  # the calibrated model is still there to compare with


def test_unmeasured_layers_fall_back_to_the_calibrated_model_then_the_roofline():
    model = tiny()
    table = filled(model, keep=lambda layer: layer.call.op == "convolution")
    p = predict_latency(model, (1, 3, 16, 16), dataclasses.replace(profile(), layers=table))
    by_source = {}
    for o in p.ops:
        by_source.setdefault(o.source, set()).add(o.op_type)
        assert o.predicted_s == {"measured": o.measured_s, "calibrated": o.calibrated_s,
                                 "roofline": o.roofline_s}[o.source]
    assert by_source["measured"] == {"conv", "depthwise conv", "pointwise conv"}
    assert "batch norm" in by_source["calibrated"] and "memory copy" in by_source["roofline"]
    assert sum(p.time_sources().values()) == pytest.approx(p.predicted_s)
    # without a table the prediction is the calibrated one, to the bit
    plain = predict_latency(model, (1, 3, 16, 16), profile())
    assert plain.predicted_s == plain.calibrated_s and not plain.measured and plain.threads == 1


def test_a_table_of_another_dtype_is_not_used():
    model = tiny()
    table = dataclasses.replace(filled(model), dtype="bfloat16")
    p = predict_ops(analyze_memory(model, (1, 3, 16, 16)), dataclasses.replace(profile(), layers=table), "float32")
    assert not p.measured


def test_table_cache_round_trip_beside_the_profile_and_bad_files(tmp_path):
    torch.set_num_threads(1)
    table = filled(tiny())
    table.path = lut.table_path("cpu", "float32")
    assert table.path.parent == cache_path("cpu", "float32").parent and "-t1-" in table.path.name
    assert lut.save_table(table) == table.path
    assert lut.load_table("cpu", "float32").times == table.times
    assert json.loads(table.path.read_text())["threads"] == 1
    torch.set_num_threads(2)
    assert lut.load_table("cpu", "float32").times == {}  # another thread count: its own table
    torch.set_num_threads(1)
    warned = []
    for bad in ("not json", json.dumps({"layers": {"k": -1.0}}), json.dumps({"layers": {"k": "fast"}}),
                json.dumps([1, 2]), json.dumps({"layers": {}, "module_overhead_s": -1}),
                json.dumps({"layers": {"k": 1e-3}, "method": "\x1b[2J" * 9}),
                json.dumps({"layers": {"k": 1e-3}, "module_overhead_s": 1e-6})):  # the last two: timed otherwise
        table.path.write_text(bad)
        assert lut.load_table("cpu", "float32", warned.append).times == {}
    assert len(warned) == 7 and all(w.startswith("ignoring the cached layer table") for w in warned)
    assert "another cnnprof (method 1, now 2)" in warned[-1] and "(method unknown," in warned[-2]
    assert "\x1b" not in "".join(warned)


def test_a_table_is_attached_only_to_a_profile_measured_here_at_this_thread_count():
    torch.set_num_threads(1)
    assert lut.attach(profile(threads=1)).layers is not None
    assert lut.attach(profile(threads=2)).layers is None
    assert lut.attach(profile(source="file")).layers is None
    assert "layers" not in profile().to_json()
    assert "layers" not in lut.attach(profile(threads=1)).to_json()


def test_the_in_network_module_overhead_is_the_forward_time_less_its_ops_replayed_per_module_call():
    net = lut.tiny_network(3, 4)
    memory = analyze_memory(net, (1, 4, 4, 4))
    runs = []

    def gap(whole, replay, device, min_time, b_times_itself=False):  # what predict.device.time_gap would time
        runs.append((whole(), replay(), b_times_itself))
        return 1e-3

    got = lut.measure_module_overhead("cpu", blocks=3, channels=4, view_overhead_s=1e-7, gap=gap)
    assert got == pytest.approx((1e-3 - memory.free_calls * 1e-7) / memory.modules_called)
    (out, replayed, own), = runs
    assert out.shape == (1, 4, 4, 4)
    assert own and 0 < replayed < 1  # on the CPU the replay's calls time themselves (their sum, in seconds)
    assert lut.measure_module_overhead("cpu", blocks=3, channels=4, gap=lambda *a, **k: -1e-6) == 0.0  # never < 0


def test_the_replay_runs_every_op_call_of_the_network_in_order():
    recorder = lut._record(lut.tiny_network(3, 4), ((1, 4, 4, 4),), "float32")
    memory = analyze_memory(lut.tiny_network(3, 4), (1, 4, 4, 4))
    assert len(recorder.order) == len(memory.calls) > len(recorder.layers)
    assert [recorder.layers[k].call.op for k in recorder.order] == [c.op for c in memory.calls]


def test_time_gap_is_the_median_difference_of_calls_timed_in_alternation(monkeypatch):
    from cnnprof.predict.device import time_gap
    from cnnprof.timing import timer

    now = [0.0]
    monkeypatch.setattr(timer, "CLOCK", [lambda: now[0]])

    def sleeper(seconds):
        def call():
            now[0] += seconds
        return call

    assert time_gap(sleeper(3e-3), sleeper(1e-3), "cpu", min_time=0.0, min_rounds=5) == pytest.approx(2e-3)


def test_a_table_with_a_module_overhead_charges_it_per_module_call():
    model = tiny()
    table = filled(model)
    table.module_overhead_s = 1e-5
    p = predict_latency(model, (1, 3, 16, 16), dataclasses.replace(profile(), layers=table))
    assert p.module_overhead_s == 1e-5
    assert p.time_sources()["overhead"] == pytest.approx(p.module_calls * 1e-5 + p.memory.free_calls * 2e-7)


def test_on_demand_prediction_measures_the_missing_layers_once(monkeypatch):
    torch.set_num_threads(1)
    timed = []
    fake_timing(monkeypatch, timed)
    monkeypatch.setattr(lut, "measure_module_overhead", lambda *a, **k: timed.append("overhead") or 4e-6)
    prof = lut.attach(profile(), on_demand=True)
    model = tiny()
    first = predict_latency(model, (1, 3, 16, 16), prof)
    assert first.time_sources()["measured"] > 0 and first.time_sources()["calibrated"] == 0
    assert len(timed) == len(set(timed)) == len(lut.record_layers(model, ((1, 3, 16, 16),))) + 1
    assert first.module_overhead_s == 4e-6
    again = predict_latency(model, (1, 3, 16, 16), lut.attach(profile(), on_demand=True))  # from the cache file
    assert len(timed) == len(set(timed)) and again.predicted_s == pytest.approx(first.predicted_s)


# ----------------------------------------------------------------------------- the commands


def test_roofline_and_compare_say_the_profile_threads_and_measured_share(cli, monkeypatch):
    torch.set_num_threads(1)
    save_profile(profile(threads=1))
    fake_timing(monkeypatch)
    monkeypatch.setattr(lut, "measure_module_overhead", lambda *a, **k: 4e-6)
    result = cli("roofline", "shufflenet_v2_x0_5", "--resolution", "32", "--threads", "1", "--by", "type")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "fixed test CPU (measured, 1 thread, float32); predicted time from " in text and "% measured, " in text
    assert "Predicted (ms)" in result.stdout and "layers not yet in this device's layer table" in result.stderr
    rows = cli.json("roofline", "shufflenet_v2_x0_5", "--resolution", "32", "--threads", "1")
    sources = rows[0]["time_sources"]  # every layer measured: the rest is the module and view overheads
    assert rows[0]["threads"] == 1 and sources["measured"] > 0 and sources["calibrated"] == sources["roofline"] == 0
    assert sum(sources.values()) == pytest.approx(1.0)
    rows = cli.json("compare", "shufflenet_v2_x0_5", "mobilenet_v3_small", "--resolution", "32", "--predict",
                    "--threads", "1")
    assert [r["threads"] for r in rows] == [1, 1]
    assert all(r["time_sources"]["measured"] > 0 and r["time_sources"]["calibrated"] == 0 for r in rows)


def test_threads_errors_are_one_line(cli, tmp_path):
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps(profile().to_json()))
    for args in (["roofline", "resnet18", "--threads", "1", "--device-spec", str(spec)],
                 ["compare", "resnet18", "resnet34", "--predict", "--threads", "1", "--device-spec", str(spec)],
                 ["roofline", "resnet18", "--threads", "100000"],
                 ["sweep", "mobilenet_v1", "--set", "width_mult=0.5,1", "--threads", "1"]):
        result = cli(*args)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert "--threads" in result.stderr


def test_design_commands_predict_with_the_profile_of_the_thread_count(cli):
    torch.set_num_threads(1)
    save_profile(profile(threads=1))  # only the one-thread profile exists: --threads 1 must find it
    torch.set_num_threads(2)
    rows = cli.json("sweep", "mobilenet_v1", "--set", "width_mult=0.5,1", "--resolution", "32", "--predict",
                    "--threads", "1")
    assert len(rows) == 2 and all(r["latency_ms"] > 0 for r in rows)
    assert torch.get_num_threads() == 1
    assert list((cache_path("cpu").parent).glob("device-*")) == [cache_path("cpu")]  # nothing measured


def test_bench_reports_achieved_rates_as_shares_of_the_profile_peak():
    from cnnprof.report.bench import bench_report, peak_share
    from cnnprof.timing.results import BenchResult, Environment, TypeTiming

    env = Environment("x", "cpu", "test CPU", 1, "float32", False, False, False)
    r = BenchResult("a", "cpu", 1, (1, 3, 8, 8), "float32", env, times_s=(0.01, 0.01, 0.01), macs=10**8,
                    breakdown=(TypeTiming("conv 3x3", 10**8, 0, 0.008, 2), TypeTiming("norm", 0, 10**6, 0.002, 2)))
    peaks = {"peak_flops": 100e9, "bandwidth": 10e9, "device_name": "test CPU", "threads": 1,
             "traffic": {("a", 1): {"flops": 2 * 10**8 + 10**6, "bytes": 5 * 10**7,
                                    "types": {"conv 3x3": (2 * 10**8, 3 * 10**7), "norm": (10**6, 2 * 10**7)}}}}
    share = peak_share(r, peaks)
    assert share["flops_share"] == pytest.approx((2e8 + 1e6) / 0.01 / 100e9)
    assert share["bandwidth_share"] == pytest.approx(5e7 / 0.01 / 10e9)
    report = bench_report([r], peaks=peaks)
    parts = {p["type"]: p for p in report.json_rows[0]["breakdown"]}
    assert parts["conv 3x3"]["flops_share"] == pytest.approx(2e8 / 0.008 / 100e9)
    assert parts["norm"]["bandwidth_share"] == pytest.approx(2e7 / 0.002 / 10e9)
    text = report.render("table", 200)
    assert "% of peak FLOP/s" in text and "20.1%" in text and "50.0%" in text and "peak 100.0 GFLOP/s" in text
    assert report.csv_rows[0]["peak_flops_share"] == pytest.approx(share["flops_share"])
    assert "peak_share" not in bench_report([r]).json_rows[0]  # no profile: no shares


def test_a_model_that_does_not_run_on_meta_and_a_layer_that_cannot_run_alone_keep_the_calibrated_model():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x[x > 0].sum() + nn.functional.relu(x).sum()

    warned = []
    table = lut.LayerTable("cpu", "float32", 1)
    table.module_overhead_s = 1e-6
    assert lut.measure_model(table, DataDependent(), ((1, 4),), warn=warned.append) == 0
    assert len(warned) == 1 and "not timed" in warned[0] and table.times == {}
    layers = lut.record_layers(tiny(), ((1, 3, 16, 16),))

    def broken(fn, *a, **k):
        raise IndexError("no kernel")

    assert lut.fill(table, layers, timer=broken) == 0 and table.times == {}
