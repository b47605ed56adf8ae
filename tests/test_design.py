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
    (["--vary", "width_per_group", "--target", "4 apples"], "--target"),  # the option given, not --constraint
    (["--vary", "width_per_group", "--to", "resnet50", "--metric", "latency", "--device", "cuda"], ""),
])
def test_match_bad_input_is_one_line_exit_2(cli, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    result = cli("match", "resnext50", *args)
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- search

SMALL_SPACE = """
name: small
base: mobilenet_v1
knobs:
  width_mult: {type: float, low: 0.25, high: 1.0}
  resolution: {type: int, low: 96, high: 224, step: 32}
  stages.3.depth: {type: categorical, choices: [2, 4, 6]}
"""


@pytest.fixture
def small_space(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_SPACE)
    return str(path)


def search_json(cli, space, out, *args):
    result = cli("search", "--space", space, "--out", str(out), "--workers", "1", "--format", "json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_search_respects_constraints_and_writes_rebuildable_configs(cli, small_space, tmp_path):
    rows = search_json(cli, small_space, tmp_path / "out", "--trials", "12", "--seed", "3", "--constraint", "macs<=150M",
                       "--constraint", "params<=2M", "--minimize", "params", "--maximize", "macs")
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    for r in rows:  # samples outside the budget were rejected on their counts: every trial returned is inside
        assert r["feasible"] and r["macs"] <= 150e6 and r["params"] <= 2e6
    front = [r for r in rows if r["pareto"]]
    assert front and all(r["feasible"] for r in front)
    stored = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert [{k: v for k, v in r.items() if k != "rejected"} for r in stored if not r["rejected"]] == rows
    rejected = [r for r in stored if r["rejected"]]  # visible, flagged, each outside a constraint, never on the front
    assert rejected and all(not r["feasible"] and not r["pareto"] and (r["macs"] > 150e6 or r["params"] > 2e6)
                            for r in rejected)
    assert [r["trial"] for r in stored] == list(range(len(stored)))
    assert (tmp_path / "out" / "trials.csv").read_text().count("\n") == len(stored) + 1
    for r in front:  # each chosen architecture is a standalone config that rebuilds to the same counts
        counted = cli.json("flops", r["config"])[0]
        assert (counted["params"], counted["macs"]) == (r["params"], r["macs"])
        assert counted["input_shape"][-1] == r["resolution"]


@pytest.mark.slow
def test_search_is_reproducible_with_seed_whatever_the_workers(cli, small_space, tmp_path):
    args = ("--trials", "10", "--seed", "7", "--minimize", "params", "--maximize", "macs")
    first = search_json(cli, small_space, tmp_path / "a", *args)
    result = cli("search", "--space", small_space, "--out", str(tmp_path / "b"), "--workers", "2", "--format", "json",
                 *args)
    second = json.loads(result.stdout)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "config"} for r in rows]  # noqa: E731
    assert strip(first) == strip(second)
    third = search_json(cli, small_space, tmp_path / "c", "--trials", "10", "--seed", "8", "--minimize", "params",
                        "--maximize", "macs")
    assert strip(third) != strip(first)


def test_search_resumes_a_stored_sqlite_study(cli, small_space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ("--storage", storage, "--seed", "1", "--minimize", "macs")
    first = search_json(cli, small_space, tmp_path / "o", "--trials", "5", *args)
    result = cli("search", "--space", small_space, "--out", str(tmp_path / "o"), "--workers", "1", "--trials", "9",
                 *args)
    assert result.exit_code == 0 and "This run: 4 trials" in result.stdout
    resumed = search_json(cli, small_space, tmp_path / "o", "--trials", "9", *args)  # complete: runs nothing
    assert [r["trial"] for r in resumed] == list(range(9))
    same = lambda rows: [(r["trial"], r["width_mult"], r["resolution"], r["params"], r["macs"]) for r in rows]  # noqa: E731
    assert same(resumed[:5]) == same(first)  # the stored trials, not new ones
    other = cli("search", "--space", small_space, "--out", str(tmp_path / "o"), "--trials", "9", "--storage", storage,
                "--maximize", "macs")
    assert other.exit_code == 2 and "other objectives" in other.stderr


def test_invalid_samples_are_failed_trials(cli, tmp_path):
    space = tmp_path / "groups.yaml"
    space.write_text("base: resnet50\nknobs:\n  groups: {type: categorical, choices: [1, 3, 32]}\n")
    rows = search_json(cli, str(space), tmp_path / "o", "--trials", "8", "--seed", "0", "--minimize", "macs",
                       "--sampler", "random")
    bad = [r for r in rows if r["groups"] == 3]
    assert bad and all(r["status"] == "invalid" and not r["feasible"] and not r["pareto"] and "groups" in r["error"]
                       for r in bad)
    assert any(r["status"] == "ok" for r in rows)


@pytest.mark.slow
def test_shipped_spaces_search_and_stats(cli, tmp_path):
    rows = search_json(cli, "configs/spaces/regnet.yaml", tmp_path / "r", "--trials", "6", "--seed", "0",
                       "--constraint", "macs<=400M", "--maximize", "macs", "--minimize", "params")
    assert {"depth", "w_0", "w_a", "w_m", "group_width"} <= set(rows[0])
    assert all(8 <= r["w_a"] <= 256 and r["w_0"] % 8 == 0 and r["group_width"] in (1, 2, 4, 8, 16, 32) for r in rows)
    assert all(r["macs"] <= 400e6 for r in rows if r["pareto"])
    plot = tmp_path / "edf.png"
    result = cli("search", "--space", "mobilenet_v2", "--out", str(tmp_path / "m"), "--workers", "1", "--trials", "6",
                 "--seed", "0", "--stats", "--constraint", "macs<=300M", "--plot", str(plot), "--format", "markdown")
    assert result.exit_code == 0, result.stderr
    assert "Design-space statistics of mobilenet_v2" in result.stdout and "| macs |" in result.stdout
    assert "of valid samples satisfy macs<=300M" in result.stdout and plot.stat().st_size > 1000
    trials = json.loads((tmp_path / "m" / "trials.json").read_text())
    assert {r["stages.1.out_channels"] for r in trials} <= {0.5, 0.75, 1.0, 1.25, 1.5}


def test_space_multipliers_scale_the_base_config():
    from cnnprof.design.space import load_space

    space = load_space("configs/spaces/mobilenet_v2.yaml")
    raw = space.config_raw({"stages.2.out_channels": 1.5, "stages.2.depth": 0.5, "stages.3.kernel_size": 5})
    assert raw["stages"][2]["out_channels"] == 48 and raw["stages"][2]["depth"] == 2  # 32 x 1.5; ceil(3 x 0.5)
    assert raw["stages"][3]["kernel_size"] == 5 and "aliases" not in raw
    config = space.config({"stages.3.kernel_size": 5})
    assert dict(config.stages[3].blocks[0].args)["kernel_size"] == 5


@pytest.mark.parametrize("space, args, message", [
    ("base: mobilenet_v1\nknobs:\n  widht_mult: {type: float, low: 0.5, high: 1.0}\n", [], "unknown knob"),
    ("base: mobilenet_v1\nknobs:\n  width_mult: {type: float, low: 1.0, high: 0.5}\n", [], "empty range"),
    ("base: mobilenet_v1\nknobs:\n  stages.1.kernal_size: {type: categorical, choices: [3, 5]}\n", [],
     "not an argument of block 'depthwise_separable'"),
    ("base: mobilenet_v1\nknobs:\n  resolution: {type: int, low: 96, high: 224, step: 0}\n", [], "step"),
    ("base: mobilenet_v1\nknobs:\n  resolution: {type: categorical, choices: []}\n", [], "non-empty list"),
    ("base: nonet\nknobs:\n  width_mult: {type: float, low: 0.5, high: 1.0}\n", [], "neither a zoo model"),
    ("base: mobilenet_v1\nknobs: [width_mult\n", [], "small.yaml:"),
    ("base: mobilenet_v1\nknobs:\n  width_mult: {type: float, low: 0.5, high: 1.0}\n", ["--constraint", "macs<400 apples"],
     "--constraint"),
    ("base: mobilenet_v1\nknobs:\n  width_mult: {type: float, low: 0.5, high: 1.0}\n", ["--constraint", "latency<=15ms"],
     "needs --bench (measure it) or --predict"),
    ("base: mobilenet_v1\nknobs:\n  width_mult: {type: float, low: 0.5, high: 1.0}\n", ["--minimize", "accuracy"],
     "unknown metric"),
])
def test_search_bad_input_is_one_line_exit_2(cli, tmp_path, space, args, message):
    path = tmp_path / "small.yaml"
    path.write_text(space)
    result = cli("search", "--space", str(path), "--out", str(tmp_path / "o"), "--trials", "2", "--minimize", "params",
                 *args)
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_design_commands_import_nothing_heavy_for_help():
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from cnnprof.cli import app; "
            "[CliRunner().invoke(app, [c, '--help']) for c in ('sweep', 'match', 'search')]; "
            "print(sorted(m for m in ('torch', 'optuna', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_latency_can_be_predicted_instead_of_measured(cli, small_space, tmp_path):
    from cnnprof.predict.device import datasheet
    from cnnprof.predict.latency import predict_latency

    rows = cli.json("sweep", "mobilenet_v1", "--set", "width_mult=1,0.5", "--predict", "--device-spec", "h100")
    expected = [1e3 * predict_latency("mobilenet_v1", None, datasheet("h100"), overrides={"width_mult": w}).best_s()
                for w in (1.0, 0.5)]
    assert [r["latency_ms"] for r in rows] == pytest.approx(expected, rel=1e-9)
    assert expected[1] < expected[0]
    match = cli.json("match", "resnext50", "--to", "resnet50", "--vary", "width_per_group", "--set", "groups=1",
                     "--metric", "latency", "--predict", "--device-spec", "h100")[0]
    assert match["width_per_group"] == 64 and match["deviation"] == 0  # C=1, d=64 is ResNet-50 itself
    found = search_json(cli, small_space, tmp_path / "out", "--trials", "6", "--seed", "1", "--predict",
                        "--device-spec", "h100", "--constraint", "latency<=1s", "--minimize", "latency")
    assert all(r["latency_ms"] is not None and r["feasible"] == (r["latency_ms"] <= 1e3) for r in found)
    for args in (["--predict", "--bench"], ["--device-spec", "h100"]):
        result = cli("sweep", "mobilenet_v1", "--set", "width_mult=1,0.5", *args)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_regnet_budget_search_acceptance(cli, tmp_path):
    """Issue 16: the RegNet command returns its trials inside macs<=400M, the same trials for the same seed whatever
    the workers, and every Pareto config rebuilds to its trial's counts."""
    args = ("--trials", "40", "--constraint", "macs<=400M", "--seed", "0", "--minimize", "params", "--maximize", "macs")
    rows = search_json(cli, "configs/spaces/regnet.yaml", tmp_path / "a", "--storage", str(tmp_path / "a.log"), *args)
    assert len(rows) == 40 and sum(r["macs"] <= 400e6 for r in rows) >= 36  # at least 90% (here: all)
    stored = json.loads((tmp_path / "a" / "trials.json").read_text())
    assert all(r["macs"] > 400e6 for r in stored if r["rejected"]) and len(stored) > 40
    again = cli("search", "--space", "configs/spaces/regnet.yaml", "--out", str(tmp_path / "b"), "--workers", "2",
                "--format", "json", "--storage", str(tmp_path / "b.log"), *args)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "config"} for r in rows]  # noqa: E731
    assert again.exit_code == 0 and strip(json.loads(again.stdout)) == strip(rows)
    for r in (r for r in rows if r["pareto"]):
        counted = cli.json("flops", r["config"])[0]
        assert (counted["params"], counted["macs"], counted["acts"]) == (r["params"], r["macs"], r["acts"])


@pytest.mark.parametrize("objectives", [(("params", "minimize"), ("macs", "maximize")),
                                        (("params", "minimize"), ("macs", "minimize"), ("acts", "maximize")),
                                        (("macs", "minimize"),)])
def test_pareto_front_equals_the_all_pairs_definition(objectives):
    """The sorted front (each point checked against the front so far) is the textbook one: a feasible trial no
    other feasible trial dominates, the first of equal ones; ties and duplicates included (few distinct values)."""
    import random

    from cnnprof.design.metrics import Point
    from cnnprof.design.search import pareto_front
    from cnnprof.design.study import TrialRecord

    rng = random.Random(len(objectives))
    xs = [rng.randint(0, 30) for _ in range(400)]  # the others grow with the first: a trade-off, a real front
    records = [TrialRecord(n, (), Point(()), rng.random() > 0.2,
                           (float(x), *(float(x + rng.randint(0, 4)) for _ in objectives[1:])))
               for n, x in enumerate(xs)]
    sign = [1 if d == "minimize" else -1 for _, d in objectives]
    pts = [(r.number, tuple(s * v for s, v in zip(sign, r.values))) for r in records if r.feasible]
    kept, seen = [], set()
    for n, v in pts:
        if not any(all(a <= b for a, b in zip(w, v)) and w != v for _, w in pts) and v not in seen:
            kept.append((v, n))
            seen.add(v)
    expected = tuple(n for _, n in sorted(kept))
    assert len(expected) > 1 or len(objectives) == 1
    assert pareto_front(records, objectives) == expected


def test_an_out_directory_stores_its_study_in_a_journal_file_and_resumes_an_earlier_sqlite_one(cli, small_space,
                                                                                               tmp_path):
    """--out's default study is OUT/study.log; an OUT/study.db an earlier cnnprof left is resumed, not restarted."""
    import optuna

    from cnnprof.design.search import default_storage

    args = ("search", "--space", small_space, "--seed", "0", "--minimize", "macs", "--format", "json", "--workers", "1")
    assert cli(*args, "--trials", "2", "--out", str(tmp_path / "new")).exit_code == 0
    assert (tmp_path / "new" / "study.log").is_file() and not (tmp_path / "new" / "study.db").exists()
    old = tmp_path / "old"
    old.mkdir()
    assert cli(*args, "--trials", "2", "--out", str(old), "--storage", str(old / "study.db")).exit_code == 0
    assert default_storage(old) == f"sqlite:///{(old / 'study.db').resolve()}"
    resumed = cli(*args, "--trials", "3", "--out", str(old))
    assert resumed.exit_code == 0, resumed.stderr
    assert len(json.loads(resumed.stdout)) == 3 and not (old / "study.log").exists()
    stored = optuna.load_study(study_name=None, storage=f"sqlite:///{old / 'study.db'}").trials
    assert len([t for t in stored if t.state.is_finished()]) == 3
