"""The renderers of cnnprof.report.render: number formatters, table layout at any width, Markdown, CSV,
JSON, Report.render, emit and RowWriter. The report builders are tested in tests/test_report_*.py."""
import csv
import io
import json
import textwrap

import pytest
from rich.console import Console

from cnnprof.errors import CnnprofError
from cnnprof.report.render import (Column, OutputError, Report, RowWriter, Table, emit, fixed, integer, percent, ratio,
                                   ratio_short, render_csv, render_markdown, shape, si, table_text, write_stdout)

WIDTHS = (40, 60, 80)


def narrow_text(report: Report, width: int) -> str:
    """The report's table text at `width` columns, checked for what every narrow layout keeps: each title
    wraps between words within the width, and no line ends in spaces."""
    text = report.render("table", width)
    lines = text.splitlines()
    assert all(line == line.rstrip() for line in lines), text
    for table in report.tables:
        if all(len(word) <= width for word in table.title.split()):
            wrapped = textwrap.wrap(table.title, width, break_long_words=False, break_on_hyphens=False)
            assert all(len(line) <= width for line in wrapped)
            assert "\n".join(wrapped) in text, (table.title, text)
    return text


# ----------------------------------------------------------------------------- number formatters


def test_si_and_ratio_formatting():
    assert si(25557032) == "25.56 M"
    assert si(4089184256) == "4.09 G"
    assert si(512) == "512" and si(None) == "-"
    assert ratio(None) == "ref"
    assert ratio(25028904 / 25557032) == "0.98× -2.1%"
    assert ratio(1.25) == "1.25× +25.0%"
    assert percent(0.5) == "50.0%" and fixed(1)(160.04) == "160.0"


def test_si_picks_the_largest_unit_at_or_below_the_value():
    assert si(1.5e12) == "1.50 T" and si(999_999_999_999) == "1000.00 G"
    assert si(1000) == "1.00 k" and si(999) == "999" and si(0) == "0"
    assert si(12.5) == "12.50" and si(12.0) == "12"  # below 1000: an integer value has no decimals
    assert si(-2_000_000) == "-2.00 M"  # the unit follows the magnitude
    assert si(1500, 1) == "1.5 k" and si(5e6, 1) == "5.0 M"


def test_integer_percent_fixed_and_shape():
    assert integer(25557032) == "25,557,032" and integer(0) == "0" and integer(None) == "-"
    assert percent(0.1234) == "12.3%" and percent(1) == "100.0%" and percent(0) == "0.0%" and percent(None) == "-"
    assert fixed(2)(1234.5678) == "1,234.57" and fixed(0)(1500) == "1,500" and fixed(1)(None) == "-"
    assert shape((1, 3, 224, 224)) == "1×3×224×224" and shape([8]) == "8" and shape(()) == ""


def test_ratio_short_keeps_the_ratio_and_drops_the_percentage():
    assert ratio(0.5) == "0.50× -50.0%" and ratio(1.0) == "1.00× +0.0%"
    assert ratio_short(2.5) == "2.50×" and ratio_short(0.5) == "0.50×" and ratio_short(None) == "ref"


def test_unencodable_characters_get_ascii_stand_ins():
    import cnnprof.report.render  # noqa: F401 - registers the error handler

    assert "1×3×8×8 — ≈ █·".encode("ascii", "cnnprof-ascii") == b"1x3x8x8 - ~ #."
    assert "µs ±".encode("ascii", "cnnprof-ascii") == b"?s +-"


# ----------------------------------------------------------------------------- table layout


def _wide_table() -> Table:
    return Table("A title of several words that is longer than a narrow terminal is wide", [
        Column("model", "Model", justify="left"), Column("params", "Parameters (count)", integer, short="Params"),
        Column("ratio", "vs ref", ratio, short_fmt=ratio_short), Column("notes", "Notes", justify="left"),
    ], [{"model": "resnext50_32x4d", "params": 25028904, "ratio": 0.9793, "notes": "timed in rotating rounds"},
        {"model": "resnet50", "params": 25557032, "ratio": None, "notes": ""}], notes=["A note that wraps " * 6],
        caption="caption text")


def _text(table: Table, width: int, encoding: str = "utf-8") -> str:
    from cnnprof.report.render import _Buffer

    return table_text(table, Console(file=_Buffer(encoding), width=width, highlight=False, soft_wrap=False,
                                     force_terminal=False, color_system=None))


def test_wide_terminal_shows_the_full_table_with_rules():
    text = _text(_wide_table(), 160)
    assert "│" in text and "Parameters (count)" in text and "0.98× -2.1%" in text
    assert text.splitlines()[0] == "A title of several words that is longer than a narrow terminal is wide"
    assert "caption text" in text and "A note that wraps" in text


def test_narrower_terminals_drop_rules_then_abbreviate_then_tighten():
    numbers = _wide_table()
    numbers.columns = numbers.columns[:3]  # no column that could wrap: the full table has one width
    full = _text(numbers, 160)
    width = max(len(line) for line in full.splitlines() if "25,557,032" in line)
    assert "│" in _text(numbers, width)
    no_rules = _text(numbers, width - 1)
    assert "│" not in no_rules and "Parameters (count)" in no_rules and "0.98× -2.1%" in no_rules
    short = _text(_wide_table(), 50)
    assert "Parameters (count)" not in short and "Params" in short
    assert "0.98×" in short and "-2.1%" not in short  # the abbreviated column's shorter cells
    for width in (20, 30, 40):
        text = _text(_wide_table(), width)
        assert "25,557,032" in text and "resnext50_32x4d" in text  # number cells and names are never cut
        assert all(line == line.rstrip() for line in text.splitlines())


@pytest.mark.parametrize("width", WIDTHS)
def test_title_and_notes_wrap_at_the_terminal_width_even_when_the_table_is_wider(width):
    table = _wide_table()
    text = _text(table, width)
    lines = text.splitlines()
    title = textwrap.wrap(table.title, width, break_long_words=False, break_on_hyphens=False)
    assert lines[:len(title)] == title and all(len(line) <= width for line in title)
    note_lines = [line for line in lines if line.startswith("A note")]
    assert note_lines and all(len(line) <= width for line in note_lines)


def test_descriptive_columns_wrap_and_numbers_stay_on_one_line():
    table = Table("", [Column("name", "Name", justify="left"), Column("v", "Value", integer),
                       Column("text", "Text", justify="left")],
                  [{"name": "model_name", "v": 1234567, "text": "words " * 12}])
    lines = _text(table, 40).splitlines()
    assert any("1,234,567" in line for line in lines)
    assert sum("words" in line for line in lines) > 1  # the text column wrapped
    assert all(len(line) <= 40 for line in lines)


def test_ascii_terminal_gets_an_ascii_box():
    text = _text(_wide_table(), 160, "ascii")
    assert "│" not in text and "┃" not in text and "|" in text and "25,557,032" in text


def test_zero_rows_still_show_the_headers():
    text = _text(Table("empty", [Column("model", "Model", justify="left"), Column("v", "Value")], []), 60)
    assert "empty" in text and "Model" in text and "Value" in text


# ----------------------------------------------------------------------------- markdown and CSV


def test_markdown_escapes_pipes_and_aligns_numbers():
    table = Table("t", [Column("name", "Name", justify="left"), Column("v", "Value", si)],
                  [{"name": "a|b", "v": 2_000_000}], notes=["note"])
    md = render_markdown(table)
    assert "| a\\|b | 2.00 M |" in md and "|:---|---:|" in md and "_note_" in md


def test_markdown_title_caption_and_notes():
    md = render_markdown(Table("Title", [Column("v", "Value", integer)], [{"v": 1000}], notes=["n1", "n2"],
                               caption="cap"))
    assert md.splitlines() == ["**Title**", "", "| Value |", "|---:|", "| 1,000 |", "", "_cap_", "_n1_", "_n2_"]
    untitled = render_markdown(Table("", [Column("v", "Value", integer)], [{"v": 1}]))
    assert untitled.splitlines()[0] == "| Value |" and untitled.endswith("| 1 |\n")


def test_csv_flattens_nested_values_and_keeps_raw_numbers():
    text = render_csv([{"model": "a", "params": 10, "input_shape": [1, 3, 8, 8], "sizes": [1, 2]},
                       {"model": "b", "extra": 1.5}])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["params"] == "10" and rows[0]["input_shape"] == "1x3x8x8" and rows[0]["sizes"] == "[1, 2]"
    assert rows[1]["extra"] == "1.5" and rows[1]["params"] == ""


def test_csv_is_spreadsheet_safe_as_today():
    text = render_csv([{"model": "a", "input_shape": (8, 3, 224, 224), "env": {"threads": 4}, "ok": True,
                        "none": None, "text": "x, y"}])
    assert text.splitlines()[0] == "model,input_shape,env,ok,none,text"
    row = next(csv.DictReader(io.StringIO(text)))
    # shapes become plain ASCII text (not a date or a number), dicts JSON, None an empty cell
    assert row == {"model": "a", "input_shape": "8x3x224x224", "env": '{"threads": 4}', "ok": "True", "none": "",
                   "text": "x, y"}
    assert text.isascii() and render_csv([]) == ""


# ----------------------------------------------------------------------------- Report, emit, RowWriter


def _report() -> Report:
    t1 = Table("First", [Column("model", "Model", justify="left"), Column("params", "Params", integer)],
               [{"model": "a", "params": 1000}])
    t2 = Table("Second", [Column("model", "Model", justify="left"), Column("share", "Share", percent)],
               [{"model": "a", "share": 0.25}])
    return Report([t1, t2], [{"model": "a", "params": 1000, "input_shape": [1, 3, 8, 8]}],
                  [{"model": "a", "params": 1000, "input_shape": [1, 3, 8, 8], "flat": 1}])


def test_report_is_the_three_tuple_the_cli_unpacks():
    tables, json_rows, csv_rows = report = _report()
    assert [t.title for t in tables] == ["First", "Second"] and json_rows[0]["params"] == 1000
    assert report.csv_rows is csv_rows and len(report) == 3


def test_report_renders_every_format():
    report = _report()
    assert json.loads(report.render("json")) == report.json_rows and report.render("json").endswith("]\n")
    assert report.render("csv") == "model,params,input_shape,flat\na,1000,1x3x8x8,1\n"
    md = report.render("markdown")
    assert "**First**" in md and "**Second**" in md and "| a | 1,000 |" in md and "| a | 25.0% |" in md
    text = report.render("table", 80)
    assert "First" in text and "1,000" in text and "25.0%" in text and "\n\nSecond" in text
    assert str(report) == report.render("table", 100)
    assert Report([], [], []).render("json") == "[]\n" and Report([], [], []).render("csv") == ""


def test_emit_writes_stdout_or_the_given_console(capsys):
    report = _report()
    emit("json", *report)
    assert json.loads(capsys.readouterr().out) == report.json_rows
    emit("csv", report.tables, report.json_rows)  # CSV defaults to the JSON rows
    assert capsys.readouterr().out.startswith("model,params,input_shape\n")
    buf = io.StringIO()
    emit("table", *report, console=Console(file=buf, width=60, force_terminal=False, color_system=None))
    assert capsys.readouterr().out == "" and buf.getvalue() == report.render("table", 60)
    emit("markdown", *report)
    assert capsys.readouterr().out == report.render("markdown")


def test_emit_and_write_fail_in_one_line_without_stdout(monkeypatch):
    import sys

    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(OutputError, match="stdout is closed"):
        emit("json", [], [])

    class Full(io.StringIO):
        def write(self, text):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys, "stdout", Full())
    with pytest.raises(OutputError, match="cannot write the report to stdout: No space left on device"):
        write_stdout("x")


def test_row_writer_keeps_every_row_written(tmp_path):
    for suffix in ("json", "jsonl", "csv"):
        path = tmp_path / f"rows.{suffix}"
        writer = RowWriter(str(path))
        assert path.read_text() == ("[]\n" if suffix == "json" else "")
        writer.add([{"model": "a", "shape": [1, 2]}], [{"model": "a", "shape": "1x2"}])
        writer.add([{"model": "b", "shape": [3]}], [{"model": "b", "shape": "3"}])
        text = path.read_text()
        if suffix == "json":
            assert json.loads(text) == [{"model": "a", "shape": [1, 2]}, {"model": "b", "shape": [3]}]
        elif suffix == "jsonl":
            assert [json.loads(line)["model"] for line in text.splitlines()] == ["a", "b"]
        else:
            assert text == "model,shape\na,1x2\nb,3\n"
    assert not list(tmp_path.glob("*.tmp*"))  # replaced atomically, no temporary file left


def test_row_writer_refuses_an_unknown_suffix_or_an_unwritable_path(tmp_path):
    with pytest.raises(CnnprofError, match=r"^--output rows.txt: the file name must end in .json, .jsonl or .csv$"):
        RowWriter("rows.txt")
    with pytest.raises(CnnprofError, match=r"^--output .*rows.json: "):
        RowWriter(str(tmp_path / "missing" / "rows.json"))


def test_row_writer_keeps_the_previous_file_and_reports_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "rows.json"
    RowWriter(str(path)).add([{"model": "old"}])
    writer = RowWriter(str(path))  # a rerun, stopped before its first row: the old rows are in rows.json~
    assert json.loads(path.read_text()) == [] and json.loads((tmp_path / "rows.json~").read_text()) == [
        {"model": "old"}]

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(OutputError, match=r"^--output .*rows.json: No space left on device$"):
        writer.add([{"model": "new"}])
