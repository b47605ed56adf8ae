"""Reports of `cnnprof params`, `cnnprof flops` and `cnnprof list`, built from counts of a tiny model.

Tiny at 1×3×8×8: stem = conv 3->8 3x3 (no bias) + batch norm + ReLU, head = global average pool + linear 8->10.
By hand: conv MACs 8·8 positions × 8 channels × 27 = 13,824; linear 8 × 10 = 80; 13,904 in the conv scope.
Params: conv 8 × 27 = 216, norm 2 × 8 = 16, linear 80 + 10 = 90; 322 in all (stem 232, head 90).
Acts (pycls): conv output 512 + linear output 10 = 522. Scope "all" adds the norm's 512 MACs (one multiply-add
per element) and 1,024 other ops (ReLU 512, pooling 512 additions): 14,416 MACs, FLOPs 15,440 (macc).
"""
import csv
import io
import json
from dataclasses import replace

import pytest
from torch import nn

import cnnprof
from cnnprof.inputs import InputSpec
from cnnprof.report.tables import flops_report, params_report, zoo_report
from tests.test_report import WIDTHS, narrow_text


class Tiny(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

    def forward(self, x):
        return self.head(self.stem(x))


@pytest.fixture(scope="module")
def tiny():
    model = Tiny()
    conv = cnnprof.count_flops(model, (1, 3, 8, 8))
    return {"model": model, "pc": cnnprof.count_params(model), "fc": conv,
            "all": cnnprof.count_flops(model, (1, 3, 8, 8), scope="all"),
            "shapes": {name: (i, o) for name, i, o in conv.module_shapes}}


def csv_rows(report):
    return list(csv.DictReader(io.StringIO(report.render("csv"))))


# ----------------------------------------------------------------------------- params


def test_params_totals(tiny):
    frozen = Tiny()
    frozen.stem[1].requires_grad_(False)
    report = params_report([("tiny", tiny["pc"]), ("frozen", cnnprof.count_params(frozen))])
    assert report.json_rows == [
        {"model": "tiny", "params": 322, "trainable_params": 322, "non_trainable_params": 0},
        {"model": "frozen", "params": 322, "trainable_params": 306, "non_trainable_params": 16}]
    text = report.render("table", 100)
    for header in ("Params", "Params (≈)", "Trainable", "Non-trainable"):
        assert header in text
    assert "306" in text and "16" in text and len(report.tables) == 1
    assert [r["model"] for r in csv_rows(report)] == ["tiny", "frozen"]


@pytest.mark.parametrize("by, expected", [
    ("stage", [("stem", 232, "72.0%"), ("head", 90, "28.0%")]),
    ("type", [("conv 3x3", 216, "67.1%"), ("linear", 90, "28.0%"), ("norm", 16, "5.0%")]),
])
def test_params_by_stage_and_type(tiny, by, expected):
    report = params_report([("tiny", tiny["pc"])], by)
    rows = report.json_rows[0][f"by_{by}"]
    assert [(r["name"], r["params"]) for r in rows] == [(n, p) for n, p, _ in expected]
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    main, breakdown = report.tables
    assert breakdown.title == f"tiny: parameters by {by}"
    text = report.render("table", 80)
    for name, _, share in expected:
        assert name in text and share in text
    assert [(r["model"], r["by"], r["name"]) for r in csv_rows(report)] == [("tiny", by, n) for n, _, _ in expected]


def test_params_by_layer_with_shapes_and_depth(tiny):
    report = params_report([("tiny", tiny["pc"], tiny["shapes"])], "layer")
    rows = {r["name"]: r for r in report.json_rows[0]["by_layer"]}
    # modules without parameters (ReLU, pool, flatten) are left out
    assert list(rows) == ["(model)", "stem", "stem.0", "stem.1", "head", "head.2"]
    assert rows["stem.0"]["params"] == 216 and rows["(model)"]["params"] == 322
    assert rows["stem.0"]["in_shape"] == [1, 3, 8, 8] and rows["stem.0"]["out_shape"] == [1, 8, 8, 8]
    assert rows["head.2"]["in_shape"] == [1, 8] and rows["head.2"]["out_shape"] == [1, 10]
    text = report.render("table", 100)
    assert "Input" in text and "Output" in text and "1×3×8×8" in text and "1×10" in text
    assert "    stem.0" in text  # indented by depth
    shallow = params_report([("tiny", tiny["pc"])], "layer", 1)
    assert [r["name"] for r in shallow.json_rows[0]["by_layer"]] == ["(model)", "stem", "head"]
    assert "Input" not in [c.header for c in shallow.tables[1].columns]  # no shapes given: no shape columns


# ----------------------------------------------------------------------------- flops


def test_flops_totals_json_and_table(tiny):
    report = flops_report([(tiny["fc"], 322, None)], "macc")
    assert report.json_rows == [{
        "model": "Tiny", "flops": 13904, "macs": 13904, "acts": 522, "other_ops": 0, "convention": "macc",
        "scope": "conv", "backend": "torch", "input_shape": [1, 3, 8, 8],
        "inputs": [{"name": None, "shape": [1, 3, 8, 8], "dtype": "float32"}], "method": "meta", "params": 322,
        "uncounted_ops": {}}]
    title = report.tables[0].title
    assert title.startswith("FLOPs per forward pass at 1×3×8×8 — convention: macc (1 MAC = 1 FLOP)")
    assert title.endswith("scope: conv (convolution and linear layers only)")
    text = report.render("table", 120)
    assert "13.90 k" in text and "522" in text and "FLOPs [macc]" in text and "Other ops" not in text
    assert "Acts: output elements of every conv, linear and windowed pooling layer" in text
    row = csv_rows(report)[0]
    assert row["input_shape"] == "1x3x8x8" and row["uncounted_ops"] == "" and row["flops"] == "13904"


def test_flops_conventions_and_scope_all(tiny):
    nvidia = flops_report([(tiny["fc"], 322, None)], "nvidia")
    assert nvidia.json_rows[0]["flops"] == 2 * 13904 and "27.81 k" in nvidia.render()
    assert "nvidia (1 MAC = 2 FLOPs)" in nvidia.tables[0].title
    everything = flops_report([(tiny["all"], 322, None)], "macc")
    row = everything.json_rows[0]
    assert (row["macs"], row["other_ops"], row["flops"], row["scope"]) == (14416, 1024, 15440, "all")
    text = everything.render("table", 120)
    assert "Other ops" in text and "1.02 k" in text and "15.44 k" in text
    assert "all (conv, linear, norm, activations, pooling, element-wise)" in everything.tables[0].title
    nv_all = flops_report([(tiny["all"], 322, None)], "nvidia")
    assert nv_all.json_rows[0]["flops"] == 2 * 14416 + 1024


def test_flops_of_several_inputs_gets_an_input_column(tiny):
    big = replace(tiny["fc"], model="Tiny at 2", input_shape=(2, 3, 8, 8))
    report = flops_report([(tiny["fc"], 322, None), (big, 322, None)])
    assert " at " not in report.tables[0].title and "Input" in [c.header for c in report.tables[0].columns]
    text = report.render("table", 120)
    assert "1×3×8×8" in text and "2×3×8×8" in text


def test_flops_notes_real_cpu_pass_named_inputs_and_uncounted_ops(tiny):
    fc = replace(tiny["fc"], method="cpu", uncounted=(("aten.weird", 2), ("aten.odd", 1)),
                 inputs=(InputSpec((1, 3, 8, 8)), InputSpec((1, 4), "int64", "mask")))
    report = flops_report([(fc, 322, None)])
    notes = report.tables[0].notes
    assert notes[0].startswith("Tiny: counted by one real forward pass on the CPU")
    assert "Tiny: inputs 1×3×8×8, mask=1×4:int64" in notes
    assert "Tiny: ops that ran but have no formula (not counted): aten.weird ×2, aten.odd ×1" in notes
    assert report.json_rows[0]["uncounted_ops"] == {"aten.weird": 2, "aten.odd": 1}
    assert csv_rows(report)[0]["uncounted_ops"] == "aten.weird:2 aten.odd:1"


@pytest.mark.parametrize("by, names, macs", [
    ("type", ["conv 3x3", "linear"], [13824, 80]),
    ("stage", ["stem", "head"], [13824, 80]),
    ("layer", ["(model)", "stem", "stem.0", "head", "head.2"], [13904, 13824, 13824, 80, 80]),
])
def test_flops_breakdowns(tiny, by, names, macs):
    report = flops_report([(tiny["fc"], 322, dict(tiny["pc"].by_module) if by == "layer" else None)], "nvidia", by)
    rows = report.json_rows[0][f"by_{by}"]
    assert [r["name"] for r in rows] == names and [r["macs"] for r in rows] == macs
    assert [r["flops"] for r in rows] == [2 * m for m in macs]
    assert report.tables[1].title == f"Tiny: FLOPs by {by} (1×3×8×8)"
    text = report.render("table", 120)
    assert "99.4%" in text and "0.6%" in text  # 13,824 and 80 of 13,904
    if by == "layer":
        assert rows[2]["params"] == 216 and rows[0]["params"] == 322
        assert rows[2]["in_shape"] == [1, 3, 8, 8] and rows[2]["out_shape"] == [1, 8, 8, 8]
        assert "Module" in text and "1×8×8×8" in text
    assert [r["by"] for r in csv_rows(report)] == [by] * len(names)


def test_flops_by_op_counts_calls(tiny):
    report = flops_report([(tiny["fc"], 322, None)], "macc", "op")
    rows = report.json_rows[0]["by_op"]
    assert sorted((r["macs"], r["calls"]) for r in rows) == [(80, 1), (13824, 1)]
    assert rows[0]["macs"] == 13824  # largest first
    assert "Calls" in [c.header for c in report.tables[1].columns]


def test_flops_layer_depth_and_scope_all_breakdown(tiny):
    report = flops_report([(tiny["all"], None, None)], "macc", "layer", 1)
    rows = report.json_rows[0]["by_layer"]
    assert [(r["name"], r["macs"], r["other_ops"]) for r in rows] == [
        ("(model)", 14416, 1024), ("stem", 14336, 512), ("head", 80, 512)]
    assert "Other ops" in [c.header for c in report.tables[1].columns]
    assert report.json_rows[0]["params"] is None and "-" in report.render()  # no params counted: shown as -


def test_a_count_prints_itself_without_the_cli(tiny):
    """What FlopCount.__str__ and ParamCount.__str__ can return: the report of the result alone."""
    text = str(flops_report([tiny["fc"]]))
    assert "FLOPs per forward pass at 1×3×8×8" in text and "13.90 k" in text and "522" in text
    assert flops_report([tiny["fc"]]).json_rows[0]["params"] is None  # not counted: the FlopCount has no params
    text = str(params_report([("tiny", tiny["pc"])]))
    assert "Parameters" in text and "322" in text


def test_flops_of_no_model():
    report = flops_report([])
    assert report.json_rows == [] and report.render("json") == "[]\n" and report.render("csv") == ""
    assert "FLOPs per forward pass" in report.render()


@pytest.mark.parametrize("width", WIDTHS)
def test_count_reports_on_narrow_terminals(tiny, width):
    mp = dict(tiny["pc"].by_module)
    for by in (None, "type", "stage", "layer", "op"):
        text = narrow_text(flops_report([(tiny["fc"], 322, mp), (tiny["all"], 322, mp)], "nvidia", by), width)
        assert "27.81 k" in text and "29.86 k" in text  # 2 × 13,904; 2 × 14,416 + 1,024
    for by in (None, "type", "stage", "layer"):
        text = narrow_text(params_report([("tiny", tiny["pc"], tiny["shapes"])], by), width)
        assert "322" in text


# ----------------------------------------------------------------------------- list


ZOO = [{"model": "resnet50", "family": "ResNet", "paper": "He et al. 2016", "description": "Bottleneck residual net.",
        "aliases": ["r50", "resnet-50"]},
       {"model": "tiny", "family": "Toy", "paper": "", "description": "A toy " * 8, "aliases": []}]


def test_zoo_list():
    report = zoo_report(ZOO)
    assert report.json_rows == ZOO and report.tables[0].title == "cnnprof zoo: 2 models"
    text = report.render("table", 100)
    for word in ("resnet50", "(r50)", "(resnet-50)", "ResNet", "He et al. 2016", "Bottleneck residual net."):
        assert word in text
    assert "A MODEL argument may be a name or alias above" in text
    assert [r["aliases"] for r in csv_rows(report)] == ["r50 resnet-50", ""]
    assert json.loads(report.render("json")) == ZOO
    for width in WIDTHS:
        assert "resnet50" in narrow_text(report, width)
