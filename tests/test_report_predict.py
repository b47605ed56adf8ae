"""Reports of `cnnprof device` and `cnnprof roofline`, from DeviceProfiles built by hand and predictions of Tiny
(see test_report_counts) at 1×3×8×8, float32 (4 bytes per element).

Traffic by hand (every tensor an op touches, once): conv reads 3·64 + 216 weights, writes 512 -> 3,680 B;
norm reads 512 + 4 × 8 statistics, writes 512 -> 4,224 B; ReLU 512 + 512 -> 4,096 B; global pool 512 + 8 -> 2,080 B;
linear reads 8 + 80 + 10, writes 10 -> 432 B. 14,512 B in all. nvidia FLOPs: conv 2 × 13,824 = 27,648,
norm 2 × 512, ReLU 512, pool 512, linear 160: 29,856.
On SLOW (1 GFLOP/s, 0.2 GB/s, ridge 5 FLOP/B, no per-op overhead): conv max(27.648, 18.4) µs (compute-bound,
7.51 FLOP/B), norm 21.12 µs, ReLU 20.48 µs, pool 10.4 µs, linear max(0.16, 2.16) µs (memory-bound, 0.37 FLOP/B):
81.808 µs. Calibrated: conv 3 µs + 27,648 / 50 GFLOP/s + 3,680 / 15 GB/s = 3.798 µs, linear 1 µs + 432 / 10 GB/s,
the other op types at their roofline times, plus 9 module calls × 1 µs: 65.84 µs.
"""
import csv
import io
import json
from dataclasses import replace

import pytest

from cnnprof.predict.device import DeviceProfile, TypeFit
from cnnprof.predict.latency import predict_latency
from cnnprof.report.roofline import device_report, roofline_report
from tests.test_report import WIDTHS, narrow_text
from tests.test_report_counts import Tiny

FITS = {"conv": TypeFit(3e-6, 5e10, 1.5e10, 12, 0.08), "linear": TypeFit(1e-6, float("inf"), 1e10, 6, 0.125)}
MEASURED = DeviceProfile("cpu", "Test CPU", "2.13.0", 4, "measured", {"float32": 1e11, "bfloat16": 2e11}, 2e10, 2e-6,
                         module_overhead_s=1e-6, copy_bandwidth=1.8e10, triad_bandwidth=2e10, calibration=FITS,
                         seconds=12.3)
SHEET = DeviceProfile("cuda", "NVIDIA H200 SXM (datasheet)", "2.13.0", 0, "datasheet", {"float32": 67e12}, 4.8e12,
                      5e-6)
SLOW = DeviceProfile("cpu", "Slow CPU", "2.13.0", 1, "measured", {"float32": 1e9}, 2e8, 0.0, module_overhead_s=1e-6,
                     calibration=FITS)


@pytest.fixture(scope="module")
def preds():
    return {"slow": predict_latency(Tiny(), (1, 3, 8, 8), SLOW),
            "wide": predict_latency(Tiny(16), (1, 3, 8, 8), SLOW),
            "sheet": predict_latency(Tiny(), (1, 3, 8, 8), replace(SLOW, calibration={}, source="datasheet"))}


# ----------------------------------------------------------------------------- device


def test_device_report_of_a_measured_profile():
    report = device_report(MEASURED, "/cache/profile.json")
    main, cal = report.tables
    assert main.title == "Device: Test CPU (cpu) — measured on this machine"
    assert main.caption == "torch 2.13.0 · 4 threads · measured in 12.3 s"
    values = {r["quantity"]: (r["value"], r["unit"]) for r in main.rows}
    assert values["peak FLOP/s (float32)"] == ("100.0", "GFLOP/s") and values["peak FLOP/s (bfloat16)"][0] == "200.0"
    assert values["memory bandwidth (best of copy, triad)"] == ("20.0", "GB/s")
    assert values["  copy"][0] == "18.0" and values["  triad"][0] == "20.0"
    assert values["ridge point (float32)"] == ("5.0", "FLOP/byte")
    assert values["per-op dispatch / launch overhead"] == ("2.00", "µs")
    assert values["per-module call overhead"] == ("1.00", "µs")
    assert "Saved to /cache/profile.json; roofline, compare --predict and bench --breakdown reuse it." in main.notes
    text = report.render("table", 120)
    assert "Per-op-type calibration (float32, single-layer micro-benchmarks)" in text
    conv, linear = cal.rows
    assert (conv["op_type"], conv["samples"], conv["median_error"]) == ("conv", 12, 0.08)
    assert "3.00" in text and "50.0" in text and "15.0" in text and "8.0%" in text and "12.5%" in text
    assert cal.columns[3].fmt(linear["flops_per_s"]) == "-"  # an infinite rate: FLOPs do not explain the time
    data = json.loads(report.render("json"))[0]
    assert data["calibration"]["linear"]["flops_per_s"] == 1e308 and data["peak_flops"]["float32"] == 1e11
    flat = next(csv.DictReader(io.StringIO(report.render("csv"))))
    assert flat["peak_float32"] == "100000000000.0" and flat["name"] == "Test CPU" and "calibration" not in flat


def test_device_report_of_a_datasheet_and_an_interrupted_or_loaded_profile():
    sheet = device_report(replace(SHEET, complete=False))
    main = sheet.tables[0]
    assert main.title == "Device: NVIDIA H200 SXM (datasheet) (cuda) — DATASHEET peaks, not measured"
    assert main.caption == "torch 2.13.0 · 0 threads" and len(sheet.tables) == 1
    assert "Interrupted: only what was measured before Ctrl-C is kept; rerun to complete." in main.notes
    assert "  copy" not in [r["quantity"] for r in main.rows]
    assert "67,000.0" in sheet.render("table", 100)
    loaded = device_report(replace(MEASURED, source="file"))
    assert loaded.tables[0].title.endswith("loaded from a profile file") and "measured in" not in loaded.tables[0].caption


# ----------------------------------------------------------------------------- roofline


def test_roofline_summary_by_hand(preds):
    report = roofline_report([preds["slow"]], "type")
    row = report.json_rows[0]
    assert (row["macs"], row["flops"], row["bytes"], row["ops"], row["module_calls"]) == (14416, 29856, 14512, 5, 9)
    assert row["intensity"] == pytest.approx(29856 / 14512) and row["ridge"] == 5.0
    assert row["roofline_ms"] == pytest.approx(0.081808) and row["calibrated_ms"] == pytest.approx(0.0658415, rel=1e-4)
    assert row["ridge_notes"] == ["conv 3x3: 7.5 FLOP/B, above the ridge (5.0 FLOP/B): compute-bound",
                                  "linear: 0.4 FLOP/B, below the ridge (5.0 FLOP/B): memory-bound"]
    summary = report.tables[0]
    assert summary.caption == ("Slow CPU (measured): peak 1.0 GFLOP/s (float32), bandwidth 0.2 GB/s, "
                               "ridge 5.0 FLOP/B")
    text = report.render("table", 160)
    for cell in ("1×3×8×8", "14.42 k", "14.51 k", "2.06", "0.082", "0.066", "Calibrated (ms)"):
        assert cell in text, cell
    assert any(n.startswith("FLOPs here are in the nvidia convention (1 MAC = 2 FLOPs)") for n in summary.notes)


def test_roofline_by_type_places_each_type_under_its_roof(preds):
    report = roofline_report([preds["slow"]], "type")
    rows = {r["name"]: r for r in report.json_rows[0]["by_type"]}
    conv, linear = rows["conv 3x3"], rows["linear"]
    assert (conv["bytes"], conv["flops"], conv["bound"], conv["attainable"]) == (3680, 27648, "compute", 1e9)
    assert (linear["bytes"], linear["flops"], linear["bound"]) == (432, 160, "memory")
    assert linear["attainable"] == pytest.approx(160 / 432 * 2e8)
    assert conv["roofline_ms"] == pytest.approx(0.027648) and conv["calibrated_ms"] == pytest.approx(0.0037983, rel=1e-4)
    assert sum(r["time_share"] for r in rows.values()) == pytest.approx(1.0)
    assert conv["macs_share"] == pytest.approx(13824 / 14416)
    assert not {"compute_s", "memory_s", "overhead_s", "roofline_s", "calibrated_s"} & set(conv)
    table = report.tables[1]
    assert table.title == "Tiny (1×3×8×8, float32) on the roofline of Slow CPU: by type"
    text = report.render("table", 200)
    assert "3.68 k" in text and "7.51" in text and "0.37" in text and "compute" in text and "memory" in text
    flat = list(csv.DictReader(io.StringIO(report.render("csv"))))
    assert flat[0]["model"] == "Tiny" and "by_type" not in flat[0]
    assert [r["name"] for r in flat[1:] if r["by"] == "type"][:2] == ["conv 3x3", "linear"]


@pytest.mark.parametrize("by, first", [("stage", "stem"), ("layer", "stem.0 [")])
def test_roofline_by_stage_and_layer(preds, by, first):
    report = roofline_report([preds["slow"]], by)
    rows = report.json_rows[0][f"by_{by}"]
    assert rows[0]["name"].startswith(first) and sum(r["bytes"] for r in rows) == 14512
    assert report.tables[1].columns[0].header == {"stage": "Stage", "layer": "Layer [op]"}[by]


def test_roofline_without_calibration_and_several_models(preds):
    report = roofline_report([preds["sheet"], preds["wide"]], "type")
    assert report.json_rows[0]["calibrated_ms"] is None and report.json_rows[1]["calibrated_ms"] is not None
    assert report.tables[0].caption.startswith("Slow CPU (DATASHEET (not measured)): peak 1.0 GFLOP/s")
    assert "Calibrated (ms)" in [c.header for c in report.tables[0].columns]  # one model has it
    assert "Calibrated (ms)" not in [c.header for c in report.tables[1].columns]
    assert len(report.tables) == 3 and report.json_rows[1]["macs"] == 2 * 14336 + 160
    alone = roofline_report([preds["sheet"]])
    assert "Calibrated (ms)" not in [c.header for c in alone.tables[0].columns]


def test_a_prediction_and_a_profile_print_themselves_without_the_cli(preds):
    text = str(roofline_report([preds["slow"]]))
    assert "on the roofline of Slow CPU: by type" in text and "14.51 k" in text
    assert "Device: Test CPU (cpu)" in str(device_report(MEASURED))


def test_roofline_of_nothing():
    assert roofline_report([], "type") == ([], [], []) and roofline_report([]).render("json") == "[]\n"


@pytest.mark.parametrize("width", WIDTHS)
def test_narrow_terminals_keep_the_numbers(preds, width):
    for by in ("type", "stage", "layer"):
        text = narrow_text(roofline_report([preds["slow"], preds["wide"]], by), width)
        assert "14.51 k" in text and "0.082" in text and "1×3×8×8" in text
    text = narrow_text(device_report(MEASURED, "/cache/profile.json"), width)
    assert "100.0" in text and "50.0" in text and "8.0%" in text
