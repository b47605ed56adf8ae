"""Design commands: sweep (MobileNet Tables 6-7), match (ResNeXt Table 2), search (Optuna over a space)."""
import json
import math
import sqlite3  # noqa: F401 - the resume test needs Python's sqlite3 (Optuna's SQLite storage)

import pytest
from torch import nn

import cnnprof
from tests.conftest import GOLDEN

# MobileNets paper (Howard et al., 2017): Table 6 (width multiplier, million MACs and params) and Table 7
# (resolution, million MACs). The paper's whole millions are rounded in some rows and truncated in others
# (568.7 -> 569 but 290.7 -> 290), so a row matches when either rounding gives the paper's number.
TABLE_6 = {1.0: (569, 4.2), 0.75: (325, 2.6), 0.5: (149, 1.3), 0.25: (41, 0.5)}
TABLE_7 = {224: 569, 192: 418, 160: 290, 128: 186}


def paper_millions(value: int) -> set[int]:
    return {round(value / 1e6), math.floor(value / 1e6)}


def test_sweep_reproduces_mobilenet_table_6(cli):
    rows = cli.json("sweep", "mobilenet_v1", "--set", "width_mult=1,0.75,0.5,0.25")
    assert [r["width_mult"] for r in rows] == [1, 0.75, 0.5, 0.25]
    for r in rows:
        mmacs, mparams = TABLE_6[r["width_mult"]]
        assert r["status"] == "ok" and mmacs in paper_millions(r["macs"])
        assert round(r["params"] / 1e6, 1) == mparams
    assert rows[0]["params"] == GOLDEN["mobilenet_v1"]["params"] and rows[0]["macs"] == GOLDEN["mobilenet_v1"]["macs"]


def test_sweep_reproduces_mobilenet_table_7_and_grids(cli):
    rows = cli.json("sweep", "mobilenet_v1", "--set", "resolution=224,192,160,128")
    assert [(r["resolution"], TABLE_7[r["resolution"]] in paper_millions(r["macs"])) for r in rows] == [
        (224, True), (192, True), (160, True), (128, True)]
    assert len({r["params"] for r in rows}) == 1  # resolution changes MACs only
    grid = cli.json("sweep", "mobilenet_v1", "--set", "width_mult=1,0.5", "--set", "resolution=224,128",
                    "--convention", "nvidia")
    assert [(r["width_mult"], r["resolution"]) for r in grid] == [(1, 224), (1, 128), (0.5, 224), (0.5, 128)]
    assert grid[0]["flops"] == 2 * grid[0]["macs"] and grid[1]["macs"] == rows[3]["macs"]


def test_sweep_reports_invalid_rows_and_keeps_the_others(cli):
    # ResNet-50's first bottleneck is 64 wide: 32 groups divide it, 3 do not.
    result = cli("sweep", "resnet50", "--set", "groups=32,3", "--set", "bottleneck_ratio=0.5", "--format", "json")
    assert result.exit_code == 0, result.stderr
    ok, bad = json.loads(result.stdout)
    assert ok["status"] == "ok" and ok["params"] == GOLDEN["resnext50_32x4d"]["params"]
    assert bad["status"] == "invalid" and "groups" in bad["error"] and bad["macs"] is None
    table = cli("sweep", "resnet50", "--set", "groups=32,3", "--set", "bottleneck_ratio=0.5").stdout
    assert "groups=3: invalid" in table


@pytest.mark.parametrize("args, message", [
    (["--set", "widht_mult=1,0.5"], "unknown knob 'widht_mult'"),
    (["--set", "width_mult=1,,0.5"], "empty value"),
    (["--set", "width_mult"], "expected KEY=V1"),
    (["--set", "width_mult=1,0.5", "--plot", "out.txt"], ".png, .svg or .pdf"),
])
def test_sweep_bad_input_is_one_line_exit_2(cli, args, message):
    result = cli("sweep", "mobilenet_v1", *args)
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_sweep_plot_and_factory_knobs(cli, tmp_path):
    plot = tmp_path / "sweep.png"
    result = cli("sweep", "mobilenet_v1", "--set", "width_mult=1,0.5", "--set", "resolution=224,160", "--plot", str(plot))
    assert result.exit_code == 0 and plot.stat().st_size > 1000
    rows = cli.json("sweep", "tests/test_design.py:wavy", "--set", "k=1,4")
    assert [r["params"] for r in rows] == [sum(p.numel() for p in wavy(k).parameters()) for k in (1, 4)]
    assert cli("sweep", "tests/test_design.py:wavy", "--set", "q=1,2").exit_code == 2


def wavy(k: int = 8) -> nn.Module:
    """A model whose cost is not monotone in its knob: widest at k = 1 and k = 16, narrowest at k = 8."""
    return nn.Sequential(nn.Conv2d(3, abs(k - 8) + 1, 3))


# ----------------------------------------------------------------------------- match


def test_width_per_group_is_torchvisions_base_width():
    # C = 1, d = 64 is ResNet-50; the zoo's ResNeXts are unchanged (golden counts, test_zoo).
    assert cnnprof.count_params(cnnprof.build_model("resnext50", "meta", groups=1, width_per_group=64)).total == \
        GOLDEN["resnet50"]["params"]
    # torchvision: width = int(planes * d / 64) * C; d is the group width of the first stage (planes 64).
    net = cnnprof.build_model("resnext50", "meta", groups=8, width_per_group=14)
    assert net.stage1[0].conv2.conv.weight.shape == (14 * 8, 14, 3, 3)
    assert net.stage3[0].conv2.conv.weight.shape == (int(256 * 14 / 64) * 8, 56, 3, 3)


def test_match_reproduces_resnext_table_2_ends(cli, tmp_path):
    plot = tmp_path / "match.png"
    result = cli("match", "resnext50", "--to", "resnet50", "--vary", "width_per_group", "--set", "groups=1,32",
                 "--format", "json", "--plot", str(plot))
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["groups"], r["width_per_group"], r["method"]) for r in rows] == [(1, 64, "bisection"), (32, 4, "bisection")]
    assert rows[0]["macs"] == GOLDEN["resnet50"]["macs"] and rows[0]["deviation"] == 0
    assert rows[1]["macs"] == GOLDEN["resnext50_32x4d"]["macs"]
    for r in rows:  # the neighbours evaluated by the bisection are further from the target
        neighbours = [m for d, m in r["evaluated"] if abs(d - r["width_per_group"]) == 1]
        assert neighbours and all(abs(m - r["target"]) >= abs(r["macs"] - r["target"]) for m in neighbours)
    assert plot.stat().st_size > 1000


def test_match_float_knob_and_numeric_target(cli):
    row = cli.json("match", "mobilenet_v1", "--vary", "width_mult", "--target", "300M", "--tol", "1e-4")[0]
    assert row["method"] == "bisection" and abs(row["deviation"]) < 0.01 and 0.5 < row["width_mult"] < 1.0
    params = cli.json("match", "mobilenet_v1", "--vary", "resolution", "--metric", "params", "--target", "1M")[0]
    assert params["method"] == "scan" and "does not change" in params["note"]  # params do not depend on resolution


def test_match_falls_back_to_a_scan_when_not_monotone(cli):
    row = cli.json("match", "tests/test_design.py:wavy", "--vary", "k", "--range", "1:16", "--metric", "params",
                   "--target", "230")[0]
    assert row["method"] == "scan" and "not monotone" in row["note"]
    best = min(range(1, 17), key=lambda k: (abs(sum(p.numel() for p in wavy(k).parameters()) - 230), k))
    assert row["k"] == best


@pytest.mark.parametrize("args, message", [
    (["--vary", "cardinality", "--to", "resnet50"], "unknown knob 'cardinality'"),
    (["--vary", "width_per_group"], "--to MODEL"),
    (["--vary", "width_per_group", "--to", "resnet50", "--range", "8:2"], "empty range"),
    (["--vary", "width_per_group", "--target", "4 apples"], "--constraint"),
    (["--vary", "width_per_group", "--to", "resnet50", "--metric", "latency", "--device", "cuda"], ""),
])
def test_match_bad_input_is_one_line_exit_2(cli, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    result = cli("match", "resnext50", *args)
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
