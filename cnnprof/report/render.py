"""Render tables as rich tables, JSON, CSV or Markdown. JSON and CSV carry raw numbers; only the
human formats (table, markdown) go through the formatters."""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table as RichTable
from rich.text import Text

FORMATS = ("table", "json", "csv", "markdown")


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: Callable[[Any], str] = str
    justify: str = "right"
    no_wrap: bool = False  # keep a left-justified cell on one line (bars)


@dataclass
class Table:
    """A titled grid of raw rows plus the columns that say how to show them."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    caption: str = ""


def si(value: float | None, digits: int = 2) -> str:
    """25557032 -> '25.56 M', 4089184256 -> '4.09 G'."""
    if value is None:
        return "-"
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}f} {unit}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.{digits}f}"


def integer(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def ratio(value: float | None) -> str:
    """1.035 -> '1.03× +3.5%'; None (the reference) -> 'ref'."""
    if value is None:
        return "ref"
    return f"{value:.2f}× {100 * (value - 1):+.1f}%"


def fixed(digits: int) -> Callable[[Any], str]:
    return lambda v: "-" if v is None else f"{v:,.{digits}f}"


def shape(value: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in value)


def stdout_console() -> Console:
    """Console for tables: the terminal's width, or wide enough not to truncate when piped to a file."""
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, soft_wrap=False, width=160)
    return console


def _widest_line(col: Column, rows: list[dict[str, Any]]) -> int:
    return max((len(line) for r in rows for line in col.fmt(r.get(col.key)).splitlines()), default=0)


def render_table(table: Table, console: Console) -> None:
    """Print a rich table. Cells are never truncated: a table wider than the terminal first loses its
    vertical rules, and is then printed at its natural width (the terminal wraps it)."""
    rich_table = RichTable(title=Text(table.title), caption=Text(table.caption) if table.caption else None,
                           title_justify="left", caption_justify="left", header_style="bold")
    for i, col in enumerate(table.columns):
        # Numbers, bars and the row's name stay on one line; descriptive text columns may wrap.
        keep = col.justify == "right" or col.no_wrap or i == 0
        rich_table.add_column(Text(col.header), justify=col.justify, no_wrap=keep,
                              min_width=max(len(col.header), _widest_line(col, table.rows)) if keep else None)
    for row in table.rows:
        rich_table.add_row(*(Text(col.fmt(row.get(col.key))) for col in table.columns))
    unbounded = console.options.update_width(10_000)
    needed = Measurement.get(console, unbounded, rich_table).minimum
    if needed > console.width:
        rich_table.box, rich_table.pad_edge, rich_table.show_edge = box.SIMPLE_HEAD, False, False
        needed = Measurement.get(console, unbounded, rich_table).minimum
    if needed > console.width:
        console = Console(file=console.file, width=needed, highlight=False, soft_wrap=False)
    console.print(rich_table)
    for note in table.notes:
        console.print(Text(note, style="dim"))


def render_markdown(table: Table) -> str:
    lines = [f"**{table.title}**", ""] if table.title else []
    lines.append("| " + " | ".join(c.header for c in table.columns) + " |")
    lines.append("|" + "|".join("---:" if c.justify == "right" else ":---" for c in table.columns) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(c.fmt(row.get(c.key)).replace("|", "\\|") for c in table.columns) + " |")
    lines += [""] + [f"_{n}_" for n in ([table.caption] if table.caption else []) + table.notes]
    return "\n".join(lines).rstrip() + "\n"


def render_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict, tuple)) else v for k, v in row.items()})
    return buf.getvalue()


def emit(fmt: str, tables: list[Table], json_rows: list[dict[str, Any]], csv_rows: list[dict[str, Any]] | None = None,
         console: Console | None = None) -> None:
    """Write the result to stdout in `fmt`. JSON: `json_rows` and nothing else; CSV: `csv_rows` (default:
    json_rows); table/markdown: the tables."""
    if fmt == "json":
        sys.stdout.write(json.dumps(json_rows, indent=2) + "\n")
    elif fmt == "csv":
        sys.stdout.write(render_csv(json_rows if csv_rows is None else csv_rows))
    elif fmt == "markdown":
        sys.stdout.write("\n".join(render_markdown(t) for t in tables))
    else:
        console = console or stdout_console()
        for i, t in enumerate(tables):
            if i:
                console.print()
            render_table(t, console)
