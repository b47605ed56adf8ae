"""Report of `cnnprof bench`, from BenchResults built by hand (nothing is timed).

STEADY: 10.0, 10.1, 10.2, 10.3, 10.4 ms -> median 10.20, mean 10.20, min 10.00, p90 10.36, p99 10.396 (10.40),
IQR 10.3 - 10.1 = 0.20; 1 sample / 10.2 ms = 98.0 samples/s; 1 GMAC / 10.2 ms = 98.0 GFLOP/s (macc), 196.1 (nvidia).
NOISY: 1, 2, 3, 4, 5 ms -> median 3.00, IQR 2.00 > 10% of the median.
"""
import csv
import io
import json
from dataclasses import replace

import pytest

from cnnprof.report.tables import bench_flags, bench_report, breakdown_rows, ratio_json, ratio_text
from cnnprof.timing.interleave import RatioStat
from cnnprof.timing.runtime import BenchResult, Environment, TypeTiming
from tests.test_report import WIDTHS, narrow_text

ENV = Environment("2.13.0", "cpu", "Test CPU", 4, "float32", False, False, False, "3.12")
STEADY = (0.0100, 0.0101, 0.0102, 0.0103, 0.0104)
NOISY = (0.001, 0.002, 0.003, 0.004, 0.005)
SETTINGS = {"warmup": 0.5, "min_time": 1.0}
BREAKDOWN = (TypeTiming("conv 3x3", 900, 0, 0.003, 2), TypeTiming("linear", 100, 0, 0.001, 1))


def result(model="a", **kw) -> BenchResult:
    kw.setdefault("times_s", STEADY)
    return BenchResult(model, kw.pop("device", "cpu"), kw.pop("batch_size", 1), kw.pop("input_shape", (1, 3, 8, 8)),
                       "float32", kw.pop("env", ENV), **kw)


def test_statistics_throughput_and_flop_rate():
    report = bench_report([result(macs=10**9, cold_s=0.05, warmup_runs=7, rounds=0)], SETTINGS)
    row = report.json_rows[0]
    assert row["latency_ms"] == pytest.approx({"median": 10.2, "mean": 10.2, "min": 10.0, "p90": 10.36,
                                               "p99": 10.396, "iqr": 0.2})
    assert row["throughput"] == pytest.approx(1 / 0.0102) and row["runs"] == 5 and not row["noisy"]
    assert row["gflop_per_s"] == pytest.approx({"macc": 1 / 0.0102, "nvidia": 2 / 0.0102})
    assert row["cold_ms"] == pytest.approx(50.0) and row["compile_ms"] is None and row["warmup_runs"] == 7
    assert row["env"]["torch_version"] == "2.13.0" and row["input_shape"] == [1, 3, 8, 8]
    assert "latency_ratio" not in row  # no ratios were given
    latency, speed = report.tables
    text = report.render("table", 160)
    for cell in ("10.20", "10.00", "10.36", "10.40", "0.20", "98.0", "196.1", "50.0"):
        assert cell in text, cell
    assert [c.header for c in latency.columns] == ["Model", "Batch", "Median (ms)", "Mean (ms)", "Min (ms)",
                                                   "P90 (ms)", "P99 (ms)", "IQR (ms)", "Runs", "Notes"]
    assert speed.caption == ("torch 2.13.0 · cpu (Test CPU) · 4 threads · float32 · channels_last off · compile off"
                             " · warm-up 0.5 s · min time 1.0 s")
    assert "Compile (ms)" not in text and "Peak CUDA mem" not in text and latency.notes == []


def test_settings_are_optional_for_a_result_printed_on_its_own():
    report = bench_report([result(env=replace(ENV, threads=1))])
    assert report.tables[1].caption == ("torch 2.13.0 · cpu (Test CPU) · 1 thread · float32 · channels_last off · "
                                        "compile off")


def test_failed_interrupted_noisy_and_halved_rows():
    results = [result("ok"), result("oom", status="oom", error="out of memory", times_s=(), needed_bytes=10**12),
               result("err", status="error", error="RuntimeError: boom", times_s=()),
               result("stop", status="interrupted", rounds=2, times_s=STEADY[:2]),
               result("noisy", times_s=NOISY), result("halved", batch_size=8, requested_batch_size=16)]
    assert [bench_flags(r) for r in results] == ["", "OOM", "ERROR: RuntimeError: boom", "interrupted after 2 rounds",
                                                 "noisy", "batch halved from 16"]
    report = bench_report(results, SETTINGS)
    text = report.render("table", 160)
    for flag in ("OOM", "ERROR: RuntimeError: boom", "interrupted after 2 rounds", "noisy", "batch halved from 16"):
        assert flag in text
    assert report.tables[0].notes[0].startswith("noisy: IQR above 10% of the median")
    oom = report.json_rows[1]
    assert (oom["status"], oom["error"], oom["estimated_bytes"], oom["runs"]) == ("oom", "out of memory", 10**12, 0)
    assert oom["latency_ms"]["median"] is None and oom["throughput"] is None
    assert report.json_rows[4]["noisy"] and report.json_rows[4]["latency_ms"]["iqr"] == pytest.approx(2.0)
    assert report.json_rows[5]["requested_batch_size"] == 16


def test_compile_and_cuda_memory_columns():
    cuda = result("gpu", device="cuda", compile_s=1.5, peak_allocated=5_000_000, peak_reserved=8_000_000)
    report = bench_report([cuda, result("gpu2", device="cuda")], SETTINGS)
    text = report.render("table", 200)
    assert "Compile (ms)" in text and "1,500" in text
    assert "Peak CUDA mem (alloc / reserved)" in text and "5.0 MB / 8.0 MB" in text
    assert report.json_rows[0]["peak_memory_bytes"] == {"allocated": 5_000_000, "reserved": 8_000_000}


def test_interleaved_ratios_table_and_json():
    q = RatioStat((1.4, 1.5, 1.6), 1.5, 1.42, 1.58)
    same = RatioStat((0.98, 1.0, 1.03), 1.0, 0.97, 1.03)
    assert ratio_text(q) == "1.50× [1.42, 1.58]" and ratio_text(None) == "-"
    assert ratio_text(same) == "no measurable difference (1.00× [0.97, 1.03])"
    assert ratio_json(q) == {"median": 1.5, "low": 1.42, "high": 1.58, "iqr": pytest.approx(0.1), "rounds": 3,
                             "measurable": True}
    results = [result("ref", rounds=3), result("b", rounds=3), result("c", rounds=3), result("solo", rounds=0)]
    report = bench_report(results, SETTINGS, [None, q, same, None])
    assert [j["ratio_reference"] for j in report.json_rows] == [None, "ref", "ref", None]
    assert report.json_rows[0]["latency_ratio"] is None and report.json_rows[1]["latency_ratio"]["median"] == 1.5
    rel = report.tables[2]
    assert [r["model"] for r in rel.rows] == ["ref", "b", "c"]  # only models timed in rounds
    assert [r["ratio_text"] for r in rel.rows] == ["ref", "1.50× [1.42, 1.58]",
                                                   "no measurable difference (1.00× [0.97, 1.03])"]
    assert rel.notes[0].endswith("Reference: ref at batch 1.")
    flat = list(csv.DictReader(io.StringIO(report.render("csv"))))[1]
    assert flat["latency_ratio_median"] == "1.5" and flat["latency_ratio_measurable"] == "True"


def test_breakdown_shares_and_predicted_times():
    rows = breakdown_rows(result(breakdown=BREAKDOWN))
    assert [(r["type"], r["macs_share"], r["time_share"]) for r in rows] == [("conv 3x3", 0.9, 0.75),
                                                                             ("linear", 0.1, 0.25)]
    assert rows[0]["time_ms"] == pytest.approx(3.0) and rows[0]["gflop_per_s_macc"] == pytest.approx(900 / 0.003 / 1e9)
    assert rows[0]["gflop_per_s_nvidia"] == pytest.approx(1800 / 0.003 / 1e9) and rows[0]["calls"] == 2
    predicted = breakdown_rows(result(breakdown=BREAKDOWN), {"conv 3x3": 0.002})
    assert predicted[0]["predicted_ms"] == pytest.approx(2.0) and predicted[0]["predicted_share"] == 1.0
    assert predicted[1]["predicted_ms"] is None and predicted[1]["predicted_share"] is None


def test_breakdown_table_with_and_without_prediction():
    r = result("a", breakdown=BREAKDOWN)
    plain = bench_report([r], SETTINGS)
    table = plain.tables[-1]
    assert table.title == "a (batch 1, cpu): share of MACs vs share of measured time by layer type"
    text = plain.render("table", 160)
    assert "█████████·  90.0%" in text and "████████··  75.0%" in text  # 10-character bars and the share
    # 3 + 1 ms of per-op time against a 10.2 ms median: 39%
    assert table.notes == ["Per-op times come from separate instrumented passes (every aten op timed on its own); "
                           "they add up to 39% of the median latency, and the shares are of their sum."]
    assert [p["type"] for p in plain.json_rows[0]["breakdown"]] == ["conv 3x3", "linear"]
    with_pred = bench_report([r], SETTINGS, None, {("a", 1): {"conv 3x3": 0.002, "linear": 0.002}})
    text = with_pred.render("table", 200)
    assert "Predicted (ms)" in text and "Predicted share" in text and "█████·····  50.0%" in text
    assert with_pred.tables[-1].notes[0].startswith("Predicted: the latency of `cnnprof roofline` (layers of the device")
    assert with_pred.json_rows[0]["breakdown"][0]["predicted_ms"] == pytest.approx(2.0)
    assert "breakdown" not in list(csv.DictReader(io.StringIO(with_pred.render("csv"))))[0]


def test_csv_flattens_statistics_and_environment():
    report = bench_report([result(macs=10**9)], SETTINGS)
    flat = list(csv.DictReader(io.StringIO(report.render("csv"))))[0]
    assert flat["latency_median_ms"] == str(report.json_rows[0]["latency_ms"]["median"])
    for key in ("latency_iqr_ms", "gflop_per_s_macc", "gflop_per_s_nvidia", "peak_allocated_bytes", "torch_version",
                "device_name", "threads"):
        assert key in flat
    assert flat["input_shape"] == "1x3x8x8" and flat["torch_version"] == "2.13.0" and flat["threads"] == "4"
    assert not {"env", "latency_ms", "gflop_per_s", "peak_memory_bytes"} & set(flat)
    assert json.loads(report.render("json"))[0]["env"]["device_name"] == "Test CPU"


def test_a_result_prints_itself_without_the_cli():
    text = str(bench_report([result(macs=10**9)]))
    assert "10.20" in text and "98.0" in text and "warm-up 0" not in text  # no settings: none in the caption


def test_no_results():
    report = bench_report([], SETTINGS)
    assert report.json_rows == [] and len(report.tables) == 2 and report.tables[1].caption == ""


@pytest.mark.parametrize("width", WIDTHS)
def test_narrow_terminals_keep_the_numbers(width):
    results = [result("ref", rounds=3, macs=10**9, cold_s=0.05, breakdown=BREAKDOWN),
               result("noisy", rounds=3, times_s=NOISY, status="interrupted"),
               result("oom", status="oom", error="out of memory", times_s=())]
    q = RatioStat((1.4, 1.5, 1.6), 1.5, 1.42, 1.58)
    text = narrow_text(bench_report(results, SETTINGS, [None, q, None], {("ref", 1): {"linear": 0.001}}), width)
    for cell in ("10.20", "3.00", "98.0", "196.1", "1.50× [1.42, 1.58]", "OOM", "90.0%", "75.0%"):
        assert cell in text, (cell, text)
