"""`cnnprof list`: the zoo's models as a table."""
from __future__ import annotations

from typing import Any

from cnnprof.report.render import Column, Report, Table


def zoo_report(rows: list[dict[str, Any]]) -> Report:
    """Name (with aliases), family, description and paper of each zoo model (rows of models.zoo.zoo_info)."""
    table = Table(f"cnnprof zoo: {len(rows)} models", [
        Column("model", "Model", justify="left"), Column("family", "Family", justify="left"),
        Column("summary", "Description / paper", justify="left"),
    ], [{**r, "model": "\n".join([r["model"], *(f"  ({a})" for a in r["aliases"])]),
         "summary": f"{r['description']}\n{r['paper']}"} for r in rows])
    table.notes = ["A MODEL argument may be a name or alias above, a .yaml config file, or module:callable."]
    csv_rows = [{**r, "aliases": " ".join(r["aliases"])} for r in rows]
    return Report([table], rows, csv_rows)
