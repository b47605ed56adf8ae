"""Number formatting and the machine-readable renderers."""
import csv
import io

from cnnprof.report.render import Column, Table, fixed, percent, ratio, render_csv, render_markdown, si


def test_si_and_ratio_formatting():
    assert si(25557032) == "25.56 M"
    assert si(4089184256) == "4.09 G"
    assert si(512) == "512" and si(None) == "-"
    assert ratio(None) == "ref"
    assert ratio(25028904 / 25557032) == "0.98× -2.1%"
    assert ratio(1.25) == "1.25× +25.0%"
    assert percent(0.5) == "50.0%" and fixed(1)(160.04) == "160.0"


def test_csv_flattens_nested_values_and_keeps_raw_numbers():
    text = render_csv([{"model": "a", "params": 10, "input_shape": [1, 3, 8, 8], "sizes": [1, 2]},
                       {"model": "b", "extra": 1.5}])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["params"] == "10" and rows[0]["input_shape"] == "1x3x8x8" and rows[0]["sizes"] == "[1, 2]"
    assert rows[1]["extra"] == "1.5" and rows[1]["params"] == ""


def test_markdown_escapes_pipes_and_aligns_numbers():
    table = Table("t", [Column("name", "Name", justify="left"), Column("v", "Value", si)],
                  [{"name": "a|b", "v": 2_000_000}], notes=["note"])
    md = render_markdown(table)
    assert "| a\\|b | 2.00 M |" in md and "|:---|---:|" in md and "_note_" in md
