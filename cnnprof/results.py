"""Results that print themselves: `print(result)` shows the table the CLI shows; `to_dict()` is its JSON row.

Every result type (ParamCount, FlopCount, MemoryProfile, LatencyPrediction, BenchResult, Profile,
Comparison) has a `report()` that returns the report layer's (tables, JSON rows, CSV rows) for it alone
(cnnprof.report): measure -> data -> render, as torch.utils.benchmark's Measurement and Compare.
"""
from __future__ import annotations

import shutil
from typing import Any


def text(report: Any, width: int | None = None) -> str:
    """The tables of a report as plain text, `width` columns wide (default: the terminal's, at least 100)."""
    import io

    from rich.console import Console

    from cnnprof.report.render import table_text

    columns = width or max(100, shutil.get_terminal_size((100, 24)).columns)
    console = Console(file=io.StringIO(), width=columns, color_system=None, force_terminal=False, highlight=False,
                      soft_wrap=False)
    tables = report[0]
    return "\n".join(table_text(t, console).rstrip("\n") for t in tables) + "\n"


class Printable:
    """Mixin: `report()` gives (tables, JSON rows, CSV rows); printing and to_dict() follow from it."""

    def report(self) -> Any:
        raise NotImplementedError

    def to_dict(self) -> Any:
        """The CLI's `--format json` row of this result (a list of rows where the CLI shows several)."""
        rows = self.report()[1]
        return rows[0] if len(rows) == 1 else rows

    def __str__(self) -> str:
        return text(self.report())

    def __rich_console__(self, console: Any, options: Any):
        from rich.text import Text

        yield Text(text(self.report(), options.max_width))
