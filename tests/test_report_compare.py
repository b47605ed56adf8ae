"""Report of `cnnprof compare`: rows from counts, predictions and interleaved timings, and their table.

Counts of Tiny (see test_report_counts) at widths 8 and 16, by hand: params 322 and 634 (conv 16 × 27 = 432,
norm 32, linear 170), MACs 13,904 and 27,808 (8·8·16·27 = 27,648 + 160), acts 522 and 1,034.
Ratios to the first: params 634 / 322 = 1.969 (+96.9%), MACs and FLOPs 2.00× (+100.0%).
"""
import csv
import io
from dataclasses import dataclass

import pytest

import cnnprof
from cnnprof.report.tables import compare_report, compare_rows
from cnnprof.timing.interleave import RatioStat
from cnnprof.timing.runtime import BenchResult, Environment
from tests.test_report import WIDTHS, narrow_text
from tests.test_report_counts import Tiny

ENV = Environment("2.13.0", "cpu", "Test CPU", 4, "float32", False, False, False)


@dataclass(frozen=True)
class Prediction:
    """The part of a LatencyPrediction compare reads."""

    seconds: float
    roofline_s: float
    calibrated: bool = True
    device_name: str = "Test CPU"
    source: str = "measured"
    threads: int = 2

    def best_s(self) -> float:
        return self.seconds

    def time_sources(self) -> dict[str, float]:
        return {"measured": 0.75 * self.seconds, "calibrated": 0.25 * self.seconds, "roofline": 0.0, "overhead": 0.0}


@pytest.fixture(scope="module")
def counts():
    out = []
    for width in (8, 16):
        model = Tiny(width)
        out.append((cnnprof.count_flops(model, (1, 3, 8, 8)), cnnprof.count_params(model).total))
    return out


def bench(median_ms: tuple[float, float], status: str = "ok"):
    """Two results with three timed runs around each median, the second `status`, and its ratio interval."""
    results = [BenchResult(f"m{i}", "cpu", 1, (1, 3, 8, 8), "float32", ENV, rounds=3,
                           times_s=tuple(m / 1e3 * f for f in (0.99, 1.0, 1.01)))
               for i, m in enumerate(median_ms)]
    if status != "ok":
        results[1] = BenchResult("m1", "cpu", 1, (1, 3, 8, 8), "float32", ENV, status=status, error="out of memory")
    return results, [None, RatioStat((1.9, 2.0, 2.1), 2.0, 1.9, 2.1) if status == "ok" else None]


def csv_of(report):
    return list(csv.DictReader(io.StringIO(report.render("csv"))))


def test_rows_from_counts(counts):
    rows = compare_rows(counts, "nvidia")
    assert [(r["params"], r["macs"], r["flops"], r["acts"]) for r in rows] == [(322, 13904, 27808, 522),
                                                                               (634, 27808, 55616, 1034)]
    assert rows[1]["params_ratio"] == pytest.approx(634 / 322) and rows[1]["flops_ratio"] == 2.0
    assert rows[0]["params_ratio"] == rows[0]["macs_ratio"] == 1.0
    assert rows[0]["macs_per_param"] == pytest.approx(13904 / 322)
    assert list(rows[0]) == ["model", "params", "flops", "macs", "acts", "convention", "scope", "input_shape",
                             "macs_per_param", "uncounted_ops", "method", "params_ratio", "flops_ratio",
                             "macs_ratio"]


def test_table_without_bench_or_predict(counts):
    report = compare_report(compare_rows(counts), "macc", "conv")
    assert report.json_rows[1]["params_ratio"] == pytest.approx(634 / 322)
    table = report.tables[0]
    assert table.title.startswith("Model comparison at 1×3×8×8 — FLOPs: macc (1 MAC = 1 FLOP); scope: conv")
    headers = [c.header for c in table.columns]
    assert headers == ["Model", "Params", "vs ref", "FLOPs [macc]", "vs ref", "Acts", "MACs/param"]
    text = report.render("table", 120)
    assert "1.97× +96.9%" in text and "2.00× +100.0%" in text and "ref" in text
    assert "13.90 k" in text and "27.81 k" in text and "43.2" in text and "43.9" in text
    assert "vs ref: ratio to Tiny, the first model." in text
    assert "Latency" not in text and "Predicted" not in text


def test_predicted_columns(counts):
    rows = compare_rows(counts, predictions=[Prediction(0.002, 0.001), Prediction(0.003, 0.0015)])
    assert rows[1]["predicted_ms"] == pytest.approx(3.0) and rows[1]["predicted_ratio"] == pytest.approx(1.5)
    assert rows[0]["prediction"] == "calibrated" and rows[0]["roofline_ms"] == pytest.approx(1.0)
    report = compare_report(rows, predict=True)
    text = report.render("table", 140)
    assert "Predicted (ms)" in text and "2.00" in text and "3.00" in text and "1.50× +50.0%" in text
    assert ("Predicted: calibrated latency on Test CPU (measured, 2 threads) from per-op costs, without running the "
            "models" in " ".join(report.tables[0].notes))
    # where the predicted time comes from, per model: the layer table, the calibrated model, the roofline
    assert "Tiny: predicted time from 75% measured, 25% calibrated." in report.tables[0].notes
    assert rows[0]["threads"] == 2 and rows[0]["time_sources"] == {"measured": 0.75, "calibrated": 0.25,
                                                                   "roofline": 0.0, "overhead": 0.0}


def test_bench_columns_interval_and_notes(counts):
    rows = compare_rows(counts, bench=bench((1.0, 2.0)))
    assert rows[0]["latency_ms"] == pytest.approx(1.0) and rows[1]["latency_ms"] == pytest.approx(2.0)
    assert rows[0]["latency_ratio"] == 1.0 and rows[1]["latency_ratio"] == 2.0
    assert rows[1]["throughput_ratio"] == pytest.approx(0.5) and rows[1]["rounds"] == 3
    assert rows[1]["latency_ratio_interval"] == {"low": 1.9, "high": 2.1, "measurable": True}
    report = compare_report(rows, bench=True)
    headers = [c.header for c in report.tables[0].columns]
    assert headers[-4:] == ["Latency (ms)", "vs ref [95% interval]", "Samples/s", "Notes"]
    text = report.render("table", 160)
    assert "2.00× [1.90, 2.10]" in text and "1,000.0" in text and "500.0" in text
    assert "Latency: median forward pass on cpu, batch 1, models timed interleaved" in " ".join(report.tables[0].notes)
    flat = csv_of(report)[1]
    assert (flat["latency_ratio_low"], flat["latency_ratio_high"], flat["latency_ratio_measurable"]) == (
        "1.9", "2.1", "True")
    assert "latency_ratio_interval" not in flat


def test_bench_no_measurable_difference_failed_and_noisy_rows(counts):
    rows = compare_rows(counts, bench=bench((1.0, 1.0)))
    rows[1]["latency_ratio_interval"] = {"low": 0.95, "high": 1.04, "measurable": False}
    rows[1]["latency_ratio"] = 1.01
    rows[0]["noisy"] = True
    report = compare_report(rows, bench=True)
    assert report.tables[0].rows[1]["latency_text"] == "no measurable difference (1.01× [0.95, 1.04])"
    assert report.tables[0].rows[0]["bench_notes"] == "noisy"
    assert any(n.startswith("noisy: IQR above 10% of the median") for n in report.tables[0].notes)
    failed = compare_report(compare_rows(counts, bench=bench((1.0, 1.0), "oom")), bench=True)
    assert failed.tables[0].rows[1]["latency_text"] == "-"
    assert failed.tables[0].rows[1]["bench_notes"] == "OOM: out of memory"
    assert failed.json_rows[1]["latency_ms"] is None and failed.json_rows[1]["latency_ratio"] is None
    assert "OOM: out of memory" in failed.render("table", 200)


def test_uncounted_ops_and_real_cpu_pass_are_noted(counts):
    from dataclasses import replace

    fc, params = counts[1]
    rows = compare_rows([counts[0], (replace(fc, uncounted=(("aten.weird", 3),), method="cpu"), params)])
    report = compare_report(rows)
    notes = report.tables[0].notes
    assert "Tiny: ops that ran but have no formula (not counted): aten.weird ×3" in notes
    assert "Tiny: counted by one real forward pass on the CPU (it cannot run on the meta device)." in notes
    assert report.json_rows[1]["uncounted_ops"] == {"aten.weird": 3}
    assert csv_of(report)[1]["uncounted_ops"] == "aten.weird:3" and csv_of(report)[0]["uncounted_ops"] == ""


def test_no_rows():
    report = compare_report([], bench=True, predict=True)
    assert report.json_rows == [] and report.tables[0].notes == []
    assert "Model comparison" in report.render()


@pytest.mark.parametrize("width", WIDTHS)
def test_narrow_terminals_keep_the_numbers(counts, width):
    rows = compare_rows(counts, predictions=[Prediction(0.002, 0.001), Prediction(0.003, 0.0015)],
                        bench=bench((1.0, 2.0)))
    text = narrow_text(compare_report(rows, "macc", "all", bench=True, predict=True), width)
    for number in ("13.90 k", "27.81 k", "1.97×", "2.00×", "1.50×", "43.9", "500.0"):
        assert number in text, (number, text)
