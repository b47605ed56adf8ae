"""Safe to point at untrusted files (issue 18, security): names from files are labels, never paths; what files
and arguments say is shown escaped, never run by the terminal or a spreadsheet; data files never run code."""
from __future__ import annotations

import ast
import json
import os
import re
import sys
from pathlib import Path

import pytest

from cnnprof.errors import CnnprofError

SPACE = """name: {name}
base: mobilenet_v1
knobs:
  width_mult: {{type: categorical, choices: [0.25]}}
"""


def write_space(path: Path, name: str) -> Path:
    path.write_text(SPACE.format(name=name))
    return path


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- names are labels, never paths


@pytest.mark.parametrize("name", ["../../../../outside", "/abs/dir/x", "a/b", "a\\b", "..", ".", ".hidden", "a..b",
                                  "", "x" * 101, "a b", "\x1b[2J", "-rf", "'quoted'"])
def test_a_space_name_that_is_not_a_label_is_one_line_naming_the_file_and_key(cli, tmp_path, monkeypatch, name):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    space = write_space(work / "evil.yaml", json.dumps(name))
    result = cli("search", "--space", "evil.yaml", "--trials", "2", "--workers", "1", "--minimize", "macs")
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("error: evil.yaml: name: ") and "not a valid name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "\x1b" not in result.stderr
    assert files_under(tmp_path) == {space}  # nothing written, anywhere


@pytest.mark.parametrize("name", ["regnet", "mobilenet_v2", "RegNetX-400MF", "v1.5+se", "9", "x" * 100])
def test_a_label_name_is_kept(tmp_path, name):
    from cnnprof.design.space import load_space

    assert load_space(write_space(tmp_path / "s.yaml", name)).name == name


@pytest.mark.parametrize("stem, expected", [("my space", "my_space"), ("_x..y", "x_y"), ("..", "space"),
                                            ("\x1b]0;t\x07", "0_t_")])
def test_a_space_without_a_name_is_named_after_its_file_as_a_label(tmp_path, stem, expected):
    from cnnprof.design.space import load_space

    path = tmp_path / f"{stem}.yaml"
    path.write_text(SPACE.format(name="x").replace("name: x\n", ""))
    assert load_space(path).name == expected


@pytest.mark.parametrize("study", ["../x", "/tmp/x", "a\nb", "a b"])
def test_a_study_name_that_is_not_a_label_is_refused_before_anything_is_written(cli, tmp_path, study):
    space = write_space(tmp_path / "s.yaml", "ok")
    result = cli("search", "--space", str(space), "--out", str(tmp_path / "out"), "--trials", "2", "--workers", "1",
                 "--minimize", "macs", "--study-name", study)
    assert result.exit_code == 2 and result.stderr.startswith("error: --study-name: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert files_under(tmp_path) == {space} and not (tmp_path / "out").exists()


def test_search_writes_only_under_its_output_directory(cli, tmp_path, monkeypatch):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    write_space(work / "s.yaml", "tiny")
    result = cli("search", "--space", "s.yaml", "--trials", "2", "--workers", "1", "--minimize", "macs")
    assert result.exit_code == 0, result.stderr
    out = work / "search-tiny"
    assert files_under(tmp_path) == {work / "s.yaml", out / "study.log", out / "trials.json", out / "trials.csv",
                                     out / "part_counts.json", out / "pareto" / "tiny_t0000.yaml"}


def test_an_output_path_that_resolves_outside_the_output_directory_is_refused(tmp_path):
    from cnnprof.design.search import output_path

    out = tmp_path / "out"
    (out / "pareto").mkdir(parents=True)
    assert output_path(out, "trials.csv") == out / "trials.csv"
    (out / "pareto" / "x.yaml").symlink_to(tmp_path / "elsewhere.yaml")  # a planted link is not followed out
    (out / "link").symlink_to(tmp_path)
    for parts in (("pareto", "x.yaml"), ("link",), ("..", "x"), ("/etc/passwd",)):
        with pytest.raises(CnnprofError, match="resolves outside `out`"):
            output_path(out, os.path.join(*parts))
    linked = tmp_path / "linked-out"
    linked.symlink_to(out)  # --out itself may be a link
    assert output_path(linked, "trials.json") == linked / "trials.json"


def test_a_config_that_cannot_be_written_is_one_line_not_a_traceback(cli, tmp_path):
    space = write_space(tmp_path / "s.yaml", "tiny")
    out = tmp_path / "out"
    out.mkdir()
    (out / "pareto").write_text("a file where the directory should be")
    result = cli("search", "--space", str(space), "--out", str(out), "--trials", "2", "--workers", "1",
                 "--minimize", "macs")
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "pareto" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- terminal escapes and markup

EVIL = "\x1b[2J\x1b]0;pwned\x07[bold]x[/bold]\x9b31m\u202e\x7f"  # clear screen, window title, markup, C1, bidi, DEL
SHOWN = "\\x1b[2J\\x1b]0;pwned\\x07[bold]x[/bold]\\x9b31m\\u202e\\x7f"


def no_controls(text: str) -> bool:
    return not any(ch in text for ch in "\x1b\x07\x9b\u202e\x7f\r")


def test_tables_and_markdown_show_every_string_escaped_and_never_as_markup():
    from cnnprof.report.render import Column, Table, render_markdown, table_text
    from rich.console import Console

    table = Table(f"Title {EVIL}", [Column("name", f"Name {EVIL}", justify="left"), Column("v", "V")],
                  [{"name": f"a {EVIL}\nsecond line", "v": 1}], notes=[f"note {EVIL}"], caption=f"cap {EVIL}")
    for console in (Console(width=300, force_terminal=False), Console(width=300, force_terminal=True)):
        text = re.sub(r"\x1b\[[0-9;]*m", "", table_text(table, console))  # rich's own styles on a terminal
        assert no_controls(text) and text.count(SHOWN) == 5 and "second line" in text
    md = render_markdown(table)
    assert no_controls(md) and md.count(SHOWN) == 5
    assert f"| a {SHOWN}<br>second line | 1 |" in md  # a line break stays inside its cell


def test_a_line_break_in_a_title_or_note_is_still_a_space():
    from cnnprof.report.render import Column, Table, render_markdown, table_text
    from rich.console import Console

    table = Table("a\nb", [Column("v", "V")], [{"v": 1}], notes=["c\nd"])
    text = table_text(table, Console(width=80, force_terminal=False))
    assert text.splitlines()[0] == "a b" and text.splitlines()[-1] == "c d"
    assert render_markdown(table).splitlines()[0] == "**a b**" and "_c d_" in render_markdown(table)


def test_printable_escapes_controls_only():
    from cnnprof.report.render import printable

    assert printable("résumé 1×3×224×224 — ≈ █·…") == "résumé 1×3×224×224 — ≈ █·…"
    assert printable("a\tb\rc\nd\x00\x85\u2028") == "a\\tb\\rc\\nd\\x00\\x85\\u2028"
    assert printable("a\nb", keep="\n") == "a\nb"


def evil_zoo(tmp_path, monkeypatch) -> Path:
    from cnnprof.models.zoo import CONFIG_DIR

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    raw = (CONFIG_DIR / "resnet18.yaml").read_text()
    raw = raw.replace("family: ResNet", f"family: {json.dumps('Fam ' + EVIL)}")
    raw = raw.replace("description: ", f"description: {json.dumps('Desc ' + EVIL)}\nx_old_description: ")
    raw = raw.replace("paper: ", f"paper: {json.dumps('Paper ' + EVIL)}\nx_old_paper: ")
    (zoo / "evil.yaml").write_text("\n".join(line for line in raw.splitlines() if not line.startswith("x_old_")))
    monkeypatch.setattr("cnnprof.models.zoo.CONFIG_DIR", zoo)
    return zoo


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_list_shows_a_configs_family_description_and_paper_escaped(cli, tmp_path, monkeypatch, fmt):
    evil_zoo(tmp_path, monkeypatch)
    result = cli("list", "--format", fmt)
    assert result.exit_code == 0, result.stderr
    assert no_controls(result.stdout)
    for field in ("Fam", "Desc", "Paper"):
        assert f"{field} {SHOWN}" in result.stdout


def test_list_json_keeps_the_original_strings(cli, tmp_path, monkeypatch):
    evil_zoo(tmp_path, monkeypatch)
    result = cli("list", "--format", "json")
    assert "\x1b" not in result.stdout  # JSON escapes them itself ...
    row = json.loads(result.stdout)[0]  # ... and the data is what the file says
    assert (row["family"], row["description"], row["paper"]) == (f"Fam {EVIL}", f"Desc {EVIL}", f"Paper {EVIL}")


@pytest.mark.parametrize("command", [["params"], ["params", "--by", "stage"], ["flops"], ["flops", "--by", "type"],
                                     ["compare", "resnet18"], ["roofline", "--device-spec", "h100"]])
@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_a_model_label_is_escaped_in_every_table(cli, command, fmt):
    model = f"mobilenet_v3_small@label={EVIL}"
    result = cli(command[0], model, *command[1:], "--format", fmt)
    assert result.exit_code == 0, result.stderr
    assert no_controls(result.stdout) and SHOWN in result.stdout


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_a_model_argument_is_escaped_in_a_sweeps_title_and_notes(cli, fmt):
    result = cli("sweep", f"mobilenet_v3_small@label={EVIL}", "--set", "width_mult=1,0.5", "--format", fmt)
    assert no_controls(result.stdout + result.stderr) and SHOWN in result.stdout  # in the title
    assert result.stdout.count("\\x1b[2J") == 3  # and in the notes of the 2 failed rows (cut short there)


def test_a_model_label_keeps_its_characters_in_json(cli):
    rows = cli.json("params", f"mobilenet_v3_small@label={EVIL}")
    assert rows[0]["model"] == EVIL


def test_the_pareto_table_shows_a_space_name_knob_and_choice_escaped(monkeypatch):
    import cnnprof.design.search as search_module
    from cnnprof.design.metrics import Point
    from cnnprof.design.space import Knob, Space
    from cnnprof.report.design import search_report

    def fake(space, sample, settings, gate=(), convention="macc"):
        return Point(tuple(sample.items()), params=1 if sample[EVIL] == EVIL else 2, macs=1, other_ops=0)

    monkeypatch.setattr(search_module, "evaluate_sample", fake)
    space = Space(EVIL, "", "api", "none", {}, (Knob(EVIL, "categorical", choices=(EVIL, "b")),))  # API-built
    result = search_module.search(space, [("params", "minimize")], trials=4, seed=0, study_name="ok")
    for fmt in ("table", "markdown"):
        text = search_report(result).render(fmt, width=400)
        assert no_controls(text) and text.count(SHOWN) >= 3  # title, header, the chosen value
    assert result.trials[0].sample[0][0] == EVIL and EVIL in search_report(result).json_rows[0]


def test_an_error_naming_a_bad_value_is_escaped_and_no_emoji_code_is_replaced(cli):
    result = cli("params", f"nosuch{EVIL}:smile:")
    assert result.exit_code == 2 and no_controls(result.stderr) and ":smile:" in result.stderr


# ----------------------------------------------------------------------------- CSV injection

FORMULAS = ["=1+2", "@SUM(A1)", '=HYPERLINK("http://x","y")', "+1", "-1+2", "\t=1", "\r=1", "-", "-x"]


def test_csv_quotes_every_text_cell_and_column_a_spreadsheet_would_run():
    import csv
    import io

    from cnnprof.report.render import render_csv

    rows = [{"text": f, "n": -1, "x": -1.5e-5, "s": "-1.5", "e": "-2e3", f: 1} for f in FORMULAS]
    parsed = list(csv.reader(io.StringIO(render_csv(rows))))
    assert parsed[0][:5] == ["text", "n", "x", "s", "e"] and parsed[0][5:] == ["'" + f for f in FORMULAS]
    for f, row in zip(FORMULAS, parsed[1:]):
        assert row[:5] == ["'" + f, "-1", "-1.5e-05", "-1.5", "-2e3"]  # numbers, even as text, stay numbers
    safe = [{"a": "a=1", "b": " =1", "c": "", "d": None, "e": True, "f": [-1], "g": {"=": 1}}]
    assert render_csv(safe).splitlines()[1] == 'a=1, =1,,,True,[-1],"{""="": 1}"'


def test_every_csv_cnnprof_writes_is_spreadsheet_safe(cli, tmp_path):
    out = tmp_path / "rows.csv"
    result = cli("params", "mobilenet_v3_small@label==1+2", "--format", "csv", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("'=1+2,") and out.read_text() == result.stdout
    space = tmp_path / "s.yaml"
    space.write_text("name: s\nbase: mobilenet_v1\nknobs:\n"
                     "  stages.0.block: {type: categorical, choices: ['=1+2', '@SUM(A1)']}\n")
    result = cli("search", "--space", str(space), "--out", str(tmp_path / "o"), "--trials", "2", "--workers", "1",
                 "--minimize", "macs", "--sampler", "random", "--seed", "0", "--format", "csv")
    assert result.exit_code == 0, result.stderr
    trials = (tmp_path / "o" / "trials.csv").read_text()
    assert trials == result.stdout
    assert {line.split(",")[4] for line in trials.splitlines()[1:]} <= {"'=1+2", "'@SUM(A1)"}
    assert json.loads((tmp_path / "o" / "trials.json").read_text())[0]["stages.0.block"] in ("=1+2", "@SUM(A1)")


def test_a_carriage_return_in_a_csv_cell_cannot_start_a_row():
    import csv
    import io

    from cnnprof.report.render import render_csv

    text = render_csv([{"a": "x\r=1+2", "n": 1}, {"a": "y", "n": 2}])
    assert text.splitlines() == ["a,n", '"x', '=1+2",1', "y,2"]  # str.splitlines breaks at CR, a CSV reader does not
    assert list(csv.reader(io.StringIO(text, newline=""))) == [["a", "n"], ["x\r=1+2", "1"], ["y", "2"]]


# ----------------------------------------------------------------------------- data files never run code

SENTINEL = "cnnprof_sentinel_mod"
TINY = """name: tiny
family: "{target}"
description: "{target}"
reference: "{target}"
params: {{width_mult: 1.0}}
stem: {{out_channels: 16, kernel_size: 3, stride: 2, activation: "{target}"}}
stages:
  - {{block: basic, depth: 1, out_channels: 16, stride: 1}}
head: {{pool: avg}}
"""
TAGS = ["!!python/object/apply:{mod}.boom []", "!!python/name:{mod}.boom", "!!python/module:{mod}",
        "!!python/object:{mod}.Boom {{}}", "!!python/object/new:{mod}.Boom []"]


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    """An importable module that leaves a marker file when it is imported or its callable is called: whatever
    names it in a data file must leave neither (it is on sys.path, so an attempt would succeed)."""
    marker = tmp_path / "ran"
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / f"{SENTINEL}.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported ')\n"
        f"def boom(*args, **kwargs):\n    open({str(marker)!r}, 'a').write('called ')\n"
        f"class Boom:\n    def __init__(self, *args, **kwargs):\n        boom()\n")
    monkeypatch.syspath_prepend(str(lib))
    monkeypatch.delitem(sys.modules, SENTINEL, raising=False)
    yield f"{SENTINEL}:boom"
    assert not marker.exists(), marker.read_text()
    assert SENTINEL not in sys.modules


@pytest.mark.parametrize("tag", TAGS)
def test_a_config_or_space_with_a_python_tag_is_refused_not_run(cli, tmp_path, sentinel, tag):
    from cnnprof.design.space import load_space
    from cnnprof.models.config import load_config

    value = tag.format(mod=SENTINEL)
    config = tmp_path / "net.yaml"
    config.write_text(TINY.format(target="x").replace('reference: "x"', f"reference: {value}"))
    with pytest.raises(CnnprofError, match="YAML tag not allowed"):
        load_config(config)
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(name="s") + f"description: {value}\n")
    with pytest.raises(CnnprofError, match="YAML tag not allowed"):
        load_space(space)
    result = cli("flops", str(config))
    assert result.exit_code == 2 and "YAML tag not allowed" in result.stderr


def test_a_module_callable_in_a_config_is_a_string(cli, tmp_path, sentinel):
    config = tmp_path / "net.yaml"
    config.write_text(TINY.format(target=sentinel))
    result = cli("flops", str(config), "--format", "json")  # the activation names no registered one
    assert result.exit_code == 2 and "activation" in result.stderr
    config.write_text(TINY.format(target=sentinel).replace(f'activation: "{sentinel}"', "activation: relu"))
    row = cli.json("params", str(config))[0]  # the family, description and reference are just text
    assert row["model"] == "tiny"
    overridden = cli("params", str(config), "--set", f"width_mult={sentinel}")  # a --set value is data too
    assert overridden.exit_code == 2 and "width_mult" in overridden.stderr


def test_a_module_callable_in_a_space_is_a_string(cli, tmp_path, sentinel):
    from cnnprof.design.space import load_space

    space = tmp_path / "s.yaml"
    space.write_text(f"name: s\nbase: {json.dumps(sentinel)}\nknobs:\n"
                     f"  width_mult: {{type: float, low: 0.5, high: 1}}\n")
    with pytest.raises(CnnprofError, match="neither a zoo model nor a config file"):
        load_space(space)
    space.write_text(f"name: s\nbase: mobilenet_v1\ndescription: {json.dumps(sentinel)}\nknobs:\n"
                     f"  stages.0.block: {{type: categorical, choices: [{json.dumps(sentinel)}, conv]}}\n")
    rows = cli.json("search", "--space", str(space), "--out", str(tmp_path / "o"), "--trials", "4", "--workers", "1",
                    "--minimize", "macs", "--sampler", "random", "--seed", "0")
    assert {r["status"] for r in rows if r["stages.0.block"] == sentinel} == {"invalid"}


def test_a_device_profile_is_json_data(cli, tmp_path, sentinel):
    profile = json.loads((Path(__file__).parent / "golden_cli" / "fixed_cpu_profile.json").read_text())
    profile.update(name=sentinel, source=sentinel, device="cpu", **{"py/object": f"{SENTINEL}.Boom",
                                                                  "__reduce__": [sentinel, []]})
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    result = cli("device", "--device-spec", str(path), "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["name"] == sentinel
    result = cli("roofline", "mobilenet_v3_small", "--device-spec", str(path), "--by", "type")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("storage", ["study.log", "sqlite:///{tmp}/study.db"])
def test_a_stored_study_is_data(cli, tmp_path, sentinel, storage):
    import optuna

    from cnnprof.design.study import open_storage

    storage = storage.format(tmp=tmp_path) if "://" in storage else str(tmp_path / storage)
    space = tmp_path / "s.yaml"
    space.write_text(f"name: s\nbase: mobilenet_v1\nknobs:\n"
                     f"  stages.0.block: {{type: categorical, choices: [{json.dumps(sentinel)}, conv]}}\n")
    args = ("search", "--space", str(space), "--out", str(tmp_path / "o"), "--workers", "1", "--minimize", "macs",
            "--sampler", "random", "--seed", "0", "--storage", storage)
    assert cli(*args, "--trials", "3").exit_code == 0
    study = optuna.load_study(study_name="s", storage=open_storage(storage))
    study.set_user_attr("note", {"py/object": f"{SENTINEL}.Boom", "call": sentinel})
    study.add_trial(optuna.trial.create_trial(  # a stored trial as anyone with the file could write it
        state=optuna.trial.TrialState.FAIL, params={"stages.0.block": sentinel},
        distributions={"stages.0.block": optuna.distributions.CategoricalDistribution([sentinel, "conv"])},
        user_attrs={"cnnprof": {"status": sentinel, "error": sentinel}, "extra": {"py/object": f"{SENTINEL}.Boom"}}))
    resumed = cli(*args, "--trials", "5", "--format", "json")  # reads every stored trial back
    assert resumed.exit_code == 0, resumed.stderr
    rows = json.loads(resumed.stdout)
    assert len(rows) == 5 and (rows[3]["status"], rows[3]["error"]) == (sentinel, sentinel)
    study.set_user_attr("space", sentinel)  # the path it was last searched from: data, not identity (moved files)
    assert cli(*args, "--trials", "6").exit_code == 0
    study.set_user_attr("fingerprint", {"hash": "0", "description": {"base": sentinel}})
    other = cli(*args, "--trials", "7")  # a study made for another space is refused, naming the stored one
    assert other.exit_code == 2 and f"base config {sentinel} -> mobilenet_v1" in other.stderr


def test_no_data_file_is_read_with_a_loader_that_builds_objects():
    import yaml

    from cnnprof.models.yaml_input import _Loader

    assert issubclass(_Loader, yaml.constructor.SafeConstructor)
    assert not issubclass(_Loader, yaml.constructor.FullConstructor)  # Full and Unsafe build Python objects
    package = Path(__file__).resolve().parents[1] / "cnnprof"
    found = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if _runs_code(node):
                found.setdefault(str(path.relative_to(package)), []).append(ast.unparse(node))
    # Only a MODEL argument imports code (models/spec.py), the package's lazy attributes import cnnprof's own
    # modules (a fixed table), the one yaml.load call uses the safe _Loader above, and the CLI's exit runs the
    # constant exec('pass') that clears CPython's unhandled-Ctrl-C mark (cnnprof.cli._forget_handled_ctrl_c).
    assert found == {"__init__.py": ["importlib.import_module(_LAZY[name])"],
                     "cli/__init__.py": ["exec('pass')"],
                     "models/spec.py": ["importlib.util.spec_from_file_location(name, file)",
                                        "importlib.import_module(target)"],
                     "models/yaml_input.py": ["yaml.load(text, Loader=_Loader)"]}, found


def _runs_code(node: ast.AST) -> bool:
    """A call that evaluates, imports or unpickles, an unsafe YAML load, or an import of a pickle-like module."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
        return any(str(n).split(".")[0] in ("pickle", "marshal", "shelve", "dill", "jsonpickle") for n in names)
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    bare = isinstance(func, ast.Name) and name in ("eval", "exec", "compile", "__import__")
    return bare or name in ("import_module", "spec_from_file_location", "load", "unsafe_load", "full_load") and (
        name != "load" or ast.unparse(func).startswith("yaml."))
