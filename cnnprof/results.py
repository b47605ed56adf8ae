"""Results that print themselves: `print(result)` shows the table the CLI shows; `to_dict()` is its JSON row.

Every result type (ParamCount, FlopCount, BenchResult, LatencyPrediction, DeviceProfile, Profile,
Comparison, and the design results) has a `report()` giving the report layer's Report for it alone
(cnnprof.report): measure -> data -> render, as torch.utils.benchmark's Measurement and Compare.
"""
from __future__ import annotations

import shutil
from typing import Any


def _width() -> int:
    return max(100, shutil.get_terminal_size((100, 24)).columns)


class Printable:
    """Mixin: `report()` gives a cnnprof.report.render.Report; printing and serialising follow from it."""

    def report(self) -> Any:
        """The report layer's Report of this result alone (cnnprof.report.builders.report_of)."""
        from cnnprof.report.builders import report_of

        return report_of(self)

    def render(self, fmt: str = "table", width: int | None = None) -> str:
        """The result as the CLI prints it with `--format fmt` (table, json, csv, markdown)."""
        from cnnprof.report.render import Report

        return Report(*self.report()).render(fmt, width or _width())

    def to_dict(self) -> Any:
        """The CLI's `--format json` row of this result (a list of rows where the CLI shows several)."""
        rows = self.report()[1]
        return rows[0] if len(rows) == 1 else rows

    def __str__(self) -> str:
        return self.render()

    def __rich_console__(self, console: Any, options: Any):
        from rich.text import Text

        yield Text(self.render(width=options.max_width))
