"""Safe to point at untrusted files (issue 18, security): names from files are labels, never paths; what files
and arguments say is shown escaped, never run by the terminal or a spreadsheet; data files never run code."""
from __future__ import annotations

import json
import os
import re
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
    assert files_under(tmp_path) == {work / "s.yaml", out / "study.db", out / "trials.json", out / "trials.csv",
                                     out / "pareto" / "tiny_t0000.yaml"}


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


def test_a_model_label_keeps_its_characters_in_json(cli):
    rows = cli.json("params", f"mobilenet_v3_small@label={EVIL}")
    assert rows[0]["model"] == EVIL


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
