"""The commands users type: exit codes, output formats, one-line errors, no lost results."""
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

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
    assert set(group.commands) == {"list", "params", "flops", "compare", "bench", "device", "roofline", "memory",
                                   "sweep", "match", "search"}
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
    depth = ["--depth", "1"] if by == "layer" else []  # --depth without --by layer is an error
    row = cli.json("flops", "mobilenet_v2", "--scope", "all", "--by", by, *depth)[0]
    parts = row[f"by_{by}"]
    if by == "layer":
        parts = [p for p in parts if p["name"] != "(model)"]
    assert abs(sum(p["share"] for p in parts) - 1) < 1e-9
    assert sum(p["flops"] for p in parts) == row["flops"]


def test_flops_table_names_convention_and_lists_uncounted_ops(cli, tmp_path):
    path = tmp_path / "odd.py"
    path.write_text("import torch\nclass Odd(torch.nn.Module):\n    def forward(self, x):\n"
                    "        return torch.linalg.cross(torch.nn.functional.relu(x), x)\n")
    result = cli("flops", f"{path}:Odd", "--input-shape", "4,3")
    assert result.exit_code == 0
    assert "macc (1 MAC = 1 FLOP)" in result.stdout
    assert "no formula (not counted): linalg_cross ×1" in result.stdout


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


# --- issue 10: per-model settings, nothing hidden, nothing lost -------------------------------------------

def test_per_model_settings_override_set_and_are_recorded(cli):
    rows = cli.json("params", "mobilenet_v1", "mobilenet_v1@width_mult=0.5", "mobilenet_v1@width_mult=0.5,label=half",
                    "--set", "width_mult=1.0")
    assert [r["model"] for r in rows] == ["mobilenet_v1@width_mult=1.0", "mobilenet_v1@width_mult=0.5", "half"]
    assert [r["overrides"] for r in rows] == [{"width_mult": 1.0}, {"width_mult": 0.5}, {"width_mult": 0.5}]
    assert rows[0]["params"] == GOLDEN["mobilenet_v1"]["params"] and rows[1]["params"] == rows[2]["params"]
    assert round(rows[1]["params"] / 1e6, 1) == 1.3
    ablation = cli.json("compare", "resnet50", "resnet50@width_mult=0.5", "--resolution", "64")
    assert ablation[1]["params_ratio"] < 0.5 and ablation[1]["model"] == "resnet50@width_mult=0.5"
    text = cli("flops", "resnet18@width_mult=0.5,label=thin", "--format", "csv").stdout
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["model"] == "thin" and row["overrides"] == "width_mult=0.5" and row["input_shape"] == "1x3x224x224"


def test_run_wide_set_key_a_model_lacks_names_that_model(cli):
    result = cli("params", "resnet50", "mobilenet_v2", "--set", "stride_in_1x1=true", "--format", "json")
    assert result.exit_code == 2
    assert "mobilenet_v2: run-wide --set stride_in_1x1=true does not apply" in result.stderr
    assert "MODEL@stride_in_1x1=true" in result.stderr
    assert [r["model"] for r in json.loads(result.stdout)] == ["resnet50@stride_in_1x1=true"]
    ok = cli.json("params", "resnet50@stride_in_1x1=true", "mobilenet_v2")  # given per model: fine
    assert [r["overrides"] for r in ok] == [{"stride_in_1x1": True}, {}]


def test_compare_lists_uncounted_ops(cli, tmp_path):
    path = tmp_path / "odd.py"
    path.write_text("import torch\nclass Odd(torch.nn.Module):\n    def forward(self, x):\n"
                    "        return torch.linalg.cross(torch.nn.functional.relu(x), x, dim=1)\n")
    rows = cli.json("compare", "resnet18", f"{path}:Odd", "--input-shape", "1,3,32,32")
    assert rows[0]["uncounted_ops"] == {} and rows[1]["uncounted_ops"] == {"linalg_cross": 1}
    out = cli("compare", "resnet18", f"{path}:Odd", "--input-shape", "1,3,32,32").stdout
    assert "no formula (not counted): linalg_cross ×1" in out


@pytest.mark.parametrize("args, message", [
    (["params", "resnet18", "--depth", "3"], "--depth applies to --by layer only"),
    (["compare", "resnet18", "resnet34", "--device", "cpu"], "--device applies only with --bench"),
    (["compare", "resnet18", "resnet34", "--warmup", "1", "--threads", "1"], "--threads, --warmup apply only with"),
    (["compare", "resnet18", "resnet34", "--batch-size", "1,8"], "sweep batch sizes with"),
    (["flops", "resnet18", "--batch-size", "2", "--input-shape", "1,3,8,8"], "no effect with --input-shape"),
    (["bench", "resnet18", "--min-time", "nan"], "--min-time"),
    (["bench", "resnet18", "--warmup", "inf"], "--warmup"),
    (["bench", "resnet18", "--threads", "100000"], "--threads 100000"),
    (["compare", "resnet18", "resnet34", "--bench", "--threads", "100000"], "--threads 100000"),
    (["params", "resnet18", "--output", "out.txt"], "must end in .json, .jsonl or .csv"),
])
def test_options_without_effect_or_out_of_range_are_errors(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr


def test_flops_batch_size_sweep_and_se_type(cli):
    rows = cli.json("flops", "resnet18", "--batch-size", "1,4", "--resolution", "32")
    assert [r["input_shape"][0] for r in rows] == [1, 4] and rows[1]["macs"] == 4 * rows[0]["macs"]
    types = {r["name"]: r for r in cli.json("flops", "mobilenet_v3_large", "--by", "type")[0]["by_type"]}
    params_types = {r["name"] for r in cli.json("params", "mobilenet_v3_large", "--by", "type")[0]["by_type"]}
    assert "SE" in types and types["SE"]["macs"] > 0 and "SE" in params_types


def test_version_and_help_without_python_types(cli):
    import cnnprof

    assert cli("--version").stdout.strip() == f"cnnprof {cnnprof.__version__}"
    for command in ("params", "flops", "compare", "bench"):
        text = cli(command, "--help").stdout
        assert "list[str]" not in text and "int range" not in text and "float range" not in text, command


def test_json_prints_empty_list_when_every_model_failed(cli):
    result = cli("params", "nosuch1", "nosuch2", "--format", "json")
    assert result.exit_code == 2 and json.loads(result.stdout) == []


def _user_model(tmp_path, body: str) -> str:
    path = tmp_path / "user_net.py"
    path.write_text("import sys\nimport torch\n"
                    "def exits():\n    sys.exit(3)\n"
                    "def interrupts():\n    raise KeyboardInterrupt\n"
                    "def chatty():\n    print('hello from the model')\n    return torch.nn.Linear(4, 2)\n" + body)
    return str(path)


def test_user_model_that_exits_interrupts_or_prints_is_contained(cli, tmp_path):
    path = _user_model(tmp_path, "")
    result = cli("params", "resnet18", f"{path}:exits", f"{path}:interrupts", f"{path}:chatty", "--format", "json")
    assert result.exit_code == 2
    rows = json.loads(result.stdout)  # stdout is pure JSON: the model's print went to stderr
    assert [r["model"] for r in rows] == ["resnet18", f"{path}:chatty"]
    assert "called sys.exit(3)" in result.stderr and "raised KeyboardInterrupt" in result.stderr
    assert "hello from the model" in result.stderr
    assert cli("params", "sys:exit").exit_code == 2


def test_output_file_gets_rows_in_every_format(cli, tmp_path):
    for suffix in ("json", "jsonl", "csv"):
        out = tmp_path / f"rows.{suffix}"
        assert cli("params", "resnet18", "mobilenet_v2", "--output", str(out)).exit_code == 0
        text = out.read_text()
        if suffix == "json":
            assert [r["model"] for r in json.loads(text)] == ["resnet18", "mobilenet_v2"]
        elif suffix == "jsonl":
            assert [json.loads(line)["model"] for line in text.splitlines()] == ["resnet18", "mobilenet_v2"]
        else:
            assert [r["model"] for r in csv.DictReader(io.StringIO(text))] == ["resnet18", "mobilenet_v2"]


def _run(args, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "cnnprof.cli", *args], stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_broken_pipe_closed_and_full_stdout_and_ascii_terminal():
    import os

    # `list` does not import torch, so these subprocesses start fast; the writing path is the same.
    p = subprocess.Popen([sys.executable, "-m", "cnnprof.cli", "list"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdout.close()  # the reader is gone before anything is written, as with `| head` ending early
    assert p.wait(timeout=60) == 0 and p.stderr.read() == ""
    with open("/dev/full", "w") as full:
        result = _run(["list"], stdout=full)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot write the report" in result.stderr
    closed = subprocess.run(f"{sys.executable} -m cnnprof.cli list >&-", shell=True, capture_output=True, text=True)
    assert closed.returncode == 1 and "stdout is closed" in closed.stderr and "Traceback" not in closed.stderr
    ascii_out = _run(["flops", "resnet18", "--resolution", "32"], env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert ascii_out.returncode == 0 and "1x3x32x32" in ascii_out.stdout and "Traceback" not in ascii_out.stderr


def test_narrow_terminal_fits_and_has_no_trailing_spaces(monkeypatch):
    from cnnprof.report.render import Column, Table, table_text
    from rich.console import Console

    table = Table("Model comparison at 1×3×224×224 — FLOPs: macc (1 MAC = 1 FLOP); scope: conv",
                  [Column("model", "Model", justify="left"), Column("params", "Params"),
                   Column("flops", "FLOPs [macc]", short="FLOPs"), Column("lat", "Latency (ms)", short="ms"),
                   Column("notes", "Notes", justify="left")],
                  [{"model": "resnext50_32x4d", "params": "25.03 M", "flops": "4.23 G", "lat": "12.34",
                    "notes": "interleaved with the reference in rotating rounds, interval below"}])
    text = table_text(table, Console(width=60, file=io.StringIO()))
    lines = text.splitlines()
    assert all(len(line) <= 60 for line in lines), text
    assert all(line == line.rstrip() for line in lines)
    words = set(table.title.split())
    title_lines = lines[:2]
    assert all(w in words for line in title_lines for w in line.split()), title_lines
    assert "FLOPs" in text and "resnext50_32x4d" in text
    from typer.testing import CliRunner

    from cnnprof.cli import app

    out = CliRunner().invoke(app, ["flops", "resnet18", "mobilenet_v2"], env={"COLUMNS": "60"}).stdout
    assert all(len(line) <= 60 and line == line.rstrip() for line in out.splitlines()), out
    assert "1.81 G" in out and "mobilenet_v2" in out
    out = CliRunner().invoke(app, ["compare", "resnet50", "resnext50_32x4d"], env={"COLUMNS": "60"}).stdout
    assert all(len(line) <= 60 and line == line.rstrip() for line in out.splitlines()), out
    assert "1.03×" in out and "4.23 G" in out  # ratios keep their value, only the percentage is dropped


def test_fvcore_out_of_memory_is_not_a_shape_error(cli, monkeypatch):
    import warnings

    pytest.importorskip("fvcore")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import uses the deprecated torch.jit.script
        from fvcore.nn import jit_analysis

    def no_memory(self):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(jit_analysis.JitModelAnalysis, "by_module_and_operator", no_memory)
    result = cli("flops", "resnet18", "--backend", "fvcore", "--resolution", "32")
    assert result.exit_code == 2 and "out of memory" in result.stderr and "does not fit" not in result.stderr


@pytest.mark.slow
def test_sigterm_during_flops_over_the_zoo_keeps_finished_rows(tmp_path):
    import signal
    import time

    out = tmp_path / "rows.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "cnnprof.cli", "flops", *ZOO, *ZOO, "--format", "json",
                          "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not (out.exists() and out.read_text().count("\n") >= 2):
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    rows = json.loads(stdout)
    assert 2 <= len(rows) < 2 * len(ZOO)
    assert [json.loads(line)["model"] for line in out.read_text().splitlines()] == [r["model"] for r in rows]
    assert [r["model"] for r in rows] == (ZOO + ZOO)[:len(rows)]
    assert "interrupted" in stderr and "Traceback" not in stderr


def test_a_full_disk_under_output_is_one_line_and_exit_1(cli, tmp_path, monkeypatch):
    from cnnprof.report.render import RowWriter

    def full(self, json_rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RowWriter, "_write", full)
    result = cli("params", "resnet18", "mobilenet_v2", "--output", str(tmp_path / "rows.json"))
    assert result.exit_code == 1 and result.stderr.strip().splitlines() == [
        f"error: --output {tmp_path / 'rows.json'}: No space left on device"]


def test_help_lists_the_commands_in_the_order_a_user_learns_them(cli):
    text = cli("--help").stdout
    order = ["list", "params", "flops", "compare", "bench", "device", "roofline", "memory", "sweep", "match", "search"]
    positions = [text.index(f"\n  {name} ") for name in order]
    assert positions == sorted(positions)


def test_usage_lines_show_arguments_as_written(cli):
    assert cli("compare", "--help").stdout.splitlines()[0].endswith("[OPTIONS] MODEL MODEL [MODEL]...")
    assert cli("flops", "--help").stdout.splitlines()[0].endswith("[OPTIONS] [MODEL]...")
    assert "{" not in cli("sweep", "--help").stdout.splitlines()[0]


@pytest.mark.slow
def test_the_console_script_finds_a_package_in_the_working_directory(tmp_path):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text("import torch\ndef build_net():\n    return torch.nn.Linear(4, 2)\n")
    script = Path(sys.executable).parent / "cnnprof"
    result = subprocess.run([str(script), "flops", "mypkg.models:build_net", "--input-shape", "1,4", "--format",
                             "json"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["macs"] == 8
