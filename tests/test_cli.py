"""The commands users type: exit codes, output formats, one-line errors, no lost results."""
import csv
import io
import json
import subprocess
import sys

import pytest

from tests.conftest import GOLDEN, ZOO


def test_list_table_and_json(cli):
    result = cli("list")
    assert result.exit_code == 0 and "resnext50_32x4d" in result.stdout and "(resnext50)" in result.stdout
    rows = cli.json("list")
    assert [r["model"] for r in rows] == ZOO
    assert all(r["family"] and r["paper"] and r["description"] for r in rows)


def test_help_and_list_do_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from cnnprof.cli import app; "
            "r = CliRunner().invoke(app, ['list', '--format', 'json']); assert r.exit_code == 0; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_command_has_help_for_every_option(cli):
    import typer

    from cnnprof.cli import app

    group = typer.main.get_command(app)
    assert set(group.commands) == {"list", "params", "flops", "compare", "bench", "sweep", "match", "search"}
    for name, command in group.commands.items():
        assert command.help, name
        assert cli(name, "--help").exit_code == 0
        for param in command.params:
            assert getattr(param, "help", None), f"{name}: {param.name} has no help"


def test_params_json_and_breakdowns(cli):
    rows = cli.json("params", "resnet50", "mobilenet_v3_large", "--by", "type")
    assert [(r["model"], r["params"], r["trainable_params"]) for r in rows] == [
        ("resnet50", GOLDEN["resnet50"]["params"], GOLDEN["resnet50"]["params"]),
        ("mobilenet_v3_large", GOLDEN["mobilenet_v3_large"]["params"], GOLDEN["mobilenet_v3_large"]["params"])]
    types = {r["name"]: r["params"] for r in rows[1]["by_type"]}
    assert {"depthwise conv", "pointwise conv", "linear", "norm", "SE"} <= set(types)
    assert sum(types.values()) == rows[1]["params"]
    stages = cli.json("params", "resnet18", "--by", "stage")[0]["by_stage"]
    assert [s["name"] for s in stages] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert abs(sum(s["share"] for s in stages) - 1) < 1e-9


def test_params_whole_zoo_when_no_model_given(cli):
    rows = cli.json("params")
    assert {r["model"]: r["params"] for r in rows} == {k: v["params"] for k, v in GOLDEN.items()}


def test_params_set_override(cli):
    rows = cli.json("params", "mobilenet_v1", "--set", "width_mult=0.5")
    assert round(rows[0]["params"] / 1e6, 1) == 1.3


def test_flops_json_fields_and_conventions(cli):
    macc = cli.json("flops", "resnet50")[0]
    nvidia = cli.json("flops", "resnet50", "--convention", "nvidia")[0]
    assert macc["macs"] == nvidia["macs"] == GOLDEN["resnet50"]["macs"]
    assert macc["flops"] == macc["macs"] and nvidia["flops"] == 2 * nvidia["macs"]
    for key in ("flops", "macs", "convention", "scope", "input_shape", "params"):
        assert key in macc
    assert (macc["convention"], macc["scope"], macc["input_shape"]) == ("macc", "conv", [1, 3, 224, 224])


def test_flops_shape_options(cli):
    row = cli.json("flops", "resnet18", "--batch-size", "4", "--resolution", "112")[0]
    assert row["input_shape"] == [4, 3, 112, 112]
    block = cli.json("flops", "resnet18", "--input-shape", "2,3,64,64")[0]
    assert block["input_shape"] == [2, 3, 64, 64]


@pytest.mark.parametrize("by", ["layer", "op", "stage", "type"])
def test_flops_breakdowns_share_sums_to_one(cli, by):
    row = cli.json("flops", "mobilenet_v2", "--scope", "all", "--by", by, "--depth", "1")[0]
    parts = row[f"by_{by}"]
    if by == "layer":
        parts = [p for p in parts if p["name"] != "(model)"]
    assert abs(sum(p["share"] for p in parts) - 1) < 1e-9
    assert sum(p["flops"] for p in parts) == row["flops"]


def test_flops_table_names_convention_and_lists_uncounted_ops(cli, tmp_path):
    path = tmp_path / "odd.py"
    path.write_text("import torch\nclass Odd(torch.nn.Module):\n    def forward(self, x):\n"
                    "        return torch.cumsum(torch.nn.functional.relu(x), 1)\n")
    result = cli("flops", f"{path}:Odd", "--input-shape", "1,8")
    assert result.exit_code == 0
    assert "macc (1 MAC = 1 FLOP)" in result.stdout
    assert "no formula (not counted): cumsum ×1" in result.stdout


def test_csv_and_markdown(cli):
    result = cli("compare", "resnet50", "resnext50", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["model"] for r in rows] == ["resnet50", "resnext50_32x4d"]
    assert int(rows[1]["params"]) == GOLDEN["resnext50_32x4d"]["params"]
    md = cli("params", "resnet18", "--format", "markdown").stdout
    assert "| resnet18 | 11,689,512 |" in md


def test_compare_json_ratios(cli):
    rows = cli.json("compare", "resnet50", "resnext50", "--convention", "nvidia")
    assert rows[0]["params_ratio"] == 1.0
    assert rows[1]["params_ratio"] == pytest.approx(25028904 / 25557032)
    assert rows[1]["flops"] == 2 * GOLDEN["resnext50_32x4d"]["macs"]
    assert rows[1]["macs_per_param"] == pytest.approx(4230479872 / 25028904)


def test_compare_table_is_readable(cli):
    out = cli("compare", "resnet50", "resnext50").stdout
    assert "resnext50_32x4d" in out and "0.98× -2.1%" in out and "1.03× +3.5%" in out
    assert "macc (1 MAC = 1 FLOP)" in out


@pytest.mark.parametrize("args, message", [
    (["params", "no_such_model"], "unknown model 'no_such_model'"),
    (["params", "resnt50"], "did you mean resnet50"),
    (["params", "missing.yaml"], "missing.yaml: no such config file"),
    (["params", "resnet50", "--set", "widht_mult=1"], "did you mean width_mult"),
    (["flops", "alexnet", "--resolution", "32"], "alexnet: does not fit input shape (1, 3, 32, 32)"),
    (["flops", "resnet50", "--input-shape", "1,3,x"], "expected integers"),
    (["flops", "resnet50", "--backend", "fvcore", "--scope", "all"], "conv scope only"),
    (["compare", "resnet50"], "at least two models"),
    (["params", "no_module_xyz:Net"], "cannot import no_module_xyz"),
])
def test_bad_input_exits_2_with_one_line(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout


def test_malformed_yaml_names_file_and_line(cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nstages: [\n  {block: basic\n")
    result = cli("params", str(path))
    assert result.exit_code == 2 and f"{path}:" in result.stderr and "Traceback" not in result.stderr


def test_one_bad_model_does_not_lose_the_others(cli):
    result = cli("flops", "resnet18", "nosuch", "mobilenet_v2", "--format", "json")
    assert result.exit_code == 2
    assert [r["model"] for r in json.loads(result.stdout)] == ["resnet18", "mobilenet_v2"]
    assert "unknown model 'nosuch'" in result.stderr
