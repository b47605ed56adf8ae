"""Render tables as rich tables, JSON, CSV or Markdown. JSON and CSV carry raw numbers; only the
human formats (table, markdown) go through the formatters."""
from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table as RichTable
from rich.text import Text

FORMATS = ("table", "json", "csv", "markdown")


@dataclass(frozen=True)
class Column:
    """How one column shows a row's value: its key, header, formatter and alignment."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str
    justify: str = "right"
    no_wrap: bool = False  # keep a left-justified cell on one line (bars)
    short: str = ""  # abbreviated header used when the table would not fit the terminal
    short_fmt: Callable[[Any], str] | None = None  # shorter cells, with the abbreviated header


@dataclass
class Table:
    """A titled grid of raw rows plus the columns that say how to show them."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    caption: str = ""


class Report(NamedTuple):
    """What every report builder returns: tables for people, the same results as raw rows for machines.

    Still a (tables, json_rows, csv_rows) tuple, so `emit(fmt, *report)` prints it; `render` and `str`
    give the text without a terminal (what a result's __str__ can return)."""

    tables: list[Table]
    json_rows: list[dict[str, Any]]
    csv_rows: list[dict[str, Any]]

    def render(self, fmt: str = "table", width: int = 100) -> str:
        """The report in `fmt` (table, json, csv, markdown) as emit would print it, tables at `width` columns."""
        console = Console(file=_Buffer("utf-8"), width=width, highlight=False, soft_wrap=False, force_terminal=False,
                          color_system=None)  # plain text whatever FORCE_COLOR or the terminal say
        return "".join(formatted(fmt, self.tables, self.json_rows, self.csv_rows, console))

    def __str__(self) -> str:
        return self.render()


def si(value: float | None, digits: int = 2) -> str:
    """25557032 -> '25.56 M', 4089184256 -> '4.09 G'."""
    if value is None:
        return "-"
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}f} {unit}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.{digits}f}"


def integer(value: int | None) -> str:
    """25557032 -> '25,557,032'."""
    return "-" if value is None else f"{value:,}"


def percent(share: float | None) -> str:
    """0.125 -> '12.5%'."""
    return "-" if share is None else f"{100 * share:.1f}%"


def ratio(value: float | None) -> str:
    """1.035 -> '1.03× +3.5%'; None (the reference) -> 'ref'."""
    if value is None:
        return "ref"
    return f"{value:.2f}× {100 * (value - 1):+.1f}%"


def ratio_short(value: float | None) -> str:
    """1.035 -> '1.03×' (narrow terminals); None (the reference) -> 'ref'."""
    return "ref" if value is None else f"{value:.2f}×"


def fixed(digits: int) -> Callable[[Any], str]:
    """Formatter with `digits` decimals and thousands separators: fixed(1)(1234.56) -> '1,234.6'."""
    return lambda v: "-" if v is None else f"{v:,.{digits}f}"


def shape(value: tuple[int, ...]) -> str:
    """(1, 3, 224, 224) -> '1×3×224×224'."""
    return "×".join(str(d) for d in value)


class OutputError(Exception):
    """stdout cannot be written (closed, full, ...): reported in one line, never as a traceback."""


# Stand-ins for the few non-ASCII characters the reports use, for terminals that cannot show them.
_ASCII = {"×": "x", "—": "-", "≈": "~", "█": "#", "·": ".", "…": "...", "±": "+-", "–": "-"}


def _replace_unencodable(exc: UnicodeError):
    text = exc.object[exc.start:exc.end]
    return "".join(_ASCII.get(c, "?") for c in text), exc.end


codecs.register_error("cnnprof-ascii", _replace_unencodable)


def safe_encoding() -> None:
    """Let stdout/stderr with a narrow encoding (PYTHONIOENCODING=ascii) print reports instead of failing."""
    for stream in (sys.stdout, sys.stderr):
        enc = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if stream is not None and hasattr(stream, "reconfigure") and enc and not enc.startswith("utf"):
            try:
                stream.reconfigure(errors="cnnprof-ascii")
            except (ValueError, OSError):  # detached or closed stream: nothing to do
                pass


def quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        pass


def write_stdout(text: str) -> None:
    """Write and flush; a closed reader (`| head`) raises BrokenPipeError, any other failure OutputError."""
    if sys.stdout is None:
        raise OutputError("cannot write the report: stdout is closed")
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OutputError(f"cannot write the report to stdout: {why}") from None


def stdout_console() -> Console:
    """Console for tables: the terminal's width, or wide enough not to truncate when piped to a file."""
    console = Console(highlight=False, soft_wrap=False, file=sys.stdout or io.StringIO())
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, soft_wrap=False, width=160, file=sys.stdout or io.StringIO())
    return console


def printable(text: str, keep: str = "") -> str:
    """`text` as it may reach a terminal: every character that is not printable (C0 and C1 controls, ESC, DEL,
    line separators, bidirectional and other format characters) shown as its Python escape (ESC as `\\x1b`),
    except those in `keep`. Every string a table or Markdown shows goes through here, because labels, names,
    descriptions and errors come from files and arguments; rich markup is never parsed either (tables are
    built of Text, never of markup strings)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def _cell(fmt: Callable[[Any], str], value: Any) -> str:
    """A formatted cell, escaped; its line breaks (a name above its aliases) are kept."""
    return printable(fmt(value), keep="\n")


def _rich_table(table: Table, short: bool) -> RichTable:
    rich_table = RichTable(caption=Text(printable(table.caption)) if table.caption else None,
                           caption_justify="left", header_style="bold")
    fmts = [(col.short_fmt or col.fmt) if short else col.fmt for col in table.columns]
    cells = [[_cell(fmt, row.get(col.key)) for col, fmt in zip(table.columns, fmts)] for row in table.rows]
    for i, col in enumerate(table.columns):
        header = printable((col.short or col.header) if short else col.header)
        # Numbers, bars and the row's name stay on one line; descriptive text columns may wrap.
        keep = col.justify == "right" or col.no_wrap or i == 0
        widest = max((len(line) for row in cells for line in row[i].splitlines()), default=0)
        rich_table.add_column(Text(header), justify=col.justify, no_wrap=keep,
                              min_width=max(len(header), widest) if keep else None)
    for row in cells:
        rich_table.add_row(*(Text(cell) for cell in row))
    return rich_table


class _Buffer(io.StringIO):
    """In-memory target that reports the real stdout's encoding (rich picks ASCII boxes from it)."""

    def __init__(self, encoding: str):
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


_TRAILING = re.compile(r"[ \t]+((?:\x1b\[[0-9;]*m)*)$", re.M)


def table_text(table: Table, console: Console) -> str:
    """The table as text for `console`. A table wider than the terminal first loses its vertical rules,
    then uses abbreviated headers and single spaces between columns (descriptive columns wrap), and is
    only then printed at its natural width (number cells are never cut).
    The title wraps between words only; no line ends in spaces."""
    width = console.width
    unbounded = console.options.update_width(10_000)
    rich_table, needed = None, 0
    # Steps: full table; no vertical rules; abbreviated headers; columns one space apart.
    for short, simple, tight in ((False, False, False), (False, True, False), (True, True, False), (True, True, True)):
        rich_table = _rich_table(table, short)
        if simple:
            rich_table.box, rich_table.pad_edge, rich_table.show_edge = box.SIMPLE_HEAD, False, False
        if tight:
            rich_table.padding = (0, 0)
        needed = Measurement.get(console, unbounded, rich_table).minimum
        if needed <= width:
            break
    text_width = width  # titles and notes wrap at the terminal's width even when the table cannot
    width = max(width, needed)
    buf = _Buffer(getattr(console.file, "encoding", None) or "utf-8")
    out = Console(file=buf, width=width, highlight=False, soft_wrap=False, force_terminal=console.is_terminal,
                  color_system=console.color_system, no_color=console.no_color)
    if table.title:
        title = textwrap.fill(printable(table.title, keep="\n"), width=text_width, break_long_words=False,
                              break_on_hyphens=False)
        out.print(Text(title, style="italic"))
    out.print(rich_table)
    for note in table.notes:
        out.print(Text(textwrap.fill(printable(note, keep="\n"), width=text_width, break_long_words=False,
                                     break_on_hyphens=False), style="dim"))
    return _TRAILING.sub(r"\1", buf.getvalue())


def _markdown_cell(fmt: Callable[[Any], str], value: Any) -> str:
    """A Markdown table cell: escaped, its pipes quoted and its line breaks <br>, so it stays in its row."""
    return _cell(fmt, value).replace("|", "\\|").replace("\n", "<br>")


def _markdown_line(text: str) -> str:
    """A title or note on one Markdown line, escaped (line breaks become spaces, as textwrap makes them in tables)."""
    return printable(text, keep="\n").replace("\n", " ")


def render_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table: bold title, numbers right-aligned, caption and notes in italics."""
    lines = [f"**{_markdown_line(table.title)}**", ""] if table.title else []
    lines.append("| " + " | ".join(_markdown_cell(str, c.header) for c in table.columns) + " |")
    lines.append("|" + "|".join("---:" if c.justify == "right" else ":---" for c in table.columns) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_markdown_cell(c.fmt, row.get(c.key)) for c in table.columns) + " |")
    lines += [""] + [f"_{_markdown_line(n)}_" for n in ([table.caption] if table.caption else []) + table.notes]
    return "\n".join(lines).rstrip() + "\n"


# What makes a spreadsheet (Excel, LibreOffice, Google Sheets) read a CSV cell as a formula (OWASP's list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NEGATIVE_NUMBER = re.compile(r"-(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell no spreadsheet runs: text starting with = + - @, a tab or a carriage return (`=HYPERLINK(...)`,
    `@SUM(A1)`, `-1+2`) gets a leading single quote, as OWASP recommends; numbers are left as they are, and so is
    text that is a negative number (`-1.5`)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NEGATIVE_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _csv_cell(key: str, value: Any) -> Any:
    if key == "input_shape" and isinstance(value, (list, tuple)):
        return "x".join(str(d) for d in value)  # 1x3x224x224, one cell a spreadsheet keeps as text
    return spreadsheet_safe(json.dumps(value) if isinstance(value, (list, dict, tuple)) else value)


def render_csv(rows: list[dict[str, Any]]) -> str:
    """Raw rows as CSV: every key of every row a column, nested values as JSON, shapes as 1x3x224x224, and no cell
    or column name a spreadsheet would run as a formula (see spreadsheet_safe). Every CSV cnnprof writes is this."""
    if not rows:
        return ""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    for cells in ([spreadsheet_safe(str(k)) for k in keys], *([_csv_cell(k, r[k]) if k in r else "" for k in keys]
                                                           for r in rows)):
        # The csv module quotes a line feed but not a lone CR (with "\n" line ends), which readers take for a
        # line end: a row holding one has its text quoted, so "x\r=1+2" cannot start a row of its own.
        cr = any(isinstance(c, str) and "\r" in c for c in cells)
        csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC if cr else csv.QUOTE_MINIMAL).writerow(cells)
    return buf.getvalue()


def formatted(fmt: str, tables: list[Table], json_rows: list[dict[str, Any]],
              csv_rows: list[dict[str, Any]] | None = None, console: Console | None = None) -> Iterator[str]:
    """The text of a result in `fmt`, piece by piece (one piece per table, laid out for `console`). JSON:
    `json_rows` and nothing else (`[]` when empty); CSV: `csv_rows` (default: json_rows); table/markdown:
    the tables."""
    if fmt == "json":
        yield json.dumps(json_rows, indent=2) + "\n"
    elif fmt == "csv":
        yield render_csv(json_rows if csv_rows is None else csv_rows)
    elif fmt == "markdown":
        yield "\n".join(render_markdown(t) for t in tables)
    else:
        console = console or stdout_console()
        for i, t in enumerate(tables):
            yield ("\n" if i else "") + table_text(t, console)


def emit(fmt: str, tables: list[Table], json_rows: list[dict[str, Any]], csv_rows: list[dict[str, Any]] | None = None,
         console: Console | None = None) -> None:
    """Write the result to stdout in `fmt` (see formatted), each table as soon as it is laid out; tables go
    to `console`'s file when one is given."""
    if sys.stdout is None and console is None:
        raise OutputError("cannot write the report: stdout is closed")
    table = fmt not in ("json", "csv", "markdown")
    if table:
        console = console or stdout_console()
    for text in formatted(fmt, tables, json_rows, csv_rows, console):
        if table and console.file is not sys.stdout:
            console.file.write(text)
        else:
            write_stdout(text)


class RowWriter:
    """`--output FILE`: every row is written as soon as it is produced, so a killed run keeps its finished
    rows. .jsonl appends one object per line; .json and .csv rewrite the whole (small) file atomically. A
    previous run's FILE is kept as FILE~ (nothing is lost when a rerun is stopped before its first row)."""

    SUFFIXES = (".json", ".jsonl", ".csv")

    def __init__(self, path: str):
        from cnnprof.errors import CnnprofError

        self.path = path
        self.suffix = os.path.splitext(path)[1].lower()
        if self.suffix not in self.SUFFIXES:
            raise CnnprofError(f"--output {path}: the file name must end in .json, .jsonl or .csv")
        self.json_rows: list[dict[str, Any]] = []
        self.csv_rows: list[dict[str, Any]] = []
        try:
            self._keep_previous()
            self._replace("[]\n" if self.suffix == ".json" else "")
        except OSError as exc:
            raise CnnprofError(f"--output {path}: {exc.strerror or exc}") from None

    def _keep_previous(self) -> None:
        """A previous run's file becomes FILE~, so that a run stopped before its first row loses nothing."""
        if os.path.isfile(self.path) and os.path.getsize(self.path) > 0:
            os.replace(self.path, self.path + "~")

    def add(self, json_rows: list[dict[str, Any]], csv_rows: list[dict[str, Any]] | None = None) -> None:
        """Record rows and write them out now."""
        self.json_rows += json_rows
        self.csv_rows += json_rows if csv_rows is None else csv_rows
        try:
            self._write(json_rows)
        except OSError as exc:  # a full disk, a vanished directory: one line, exit 1, never a traceback
            raise OutputError(f"--output {self.path}: {exc.strerror or exc}") from None

    def _write(self, json_rows: list[dict[str, Any]]) -> None:
        if self.suffix == ".jsonl":
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in json_rows)
        elif self.suffix == ".json":
            self._replace(json.dumps(self.json_rows, indent=2) + "\n")
        else:
            self._replace(render_csv(self.csv_rows))

    def _replace(self, text: str) -> None:
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.path)
