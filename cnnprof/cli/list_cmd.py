"""`cnnprof list`."""
from __future__ import annotations

from functools import partial

from cnnprof.cli.common import app, Format, FormatOpt, guard


@app.command("list")
def list_cmd(fmt: FormatOpt = Format.table) -> None:
    """List the zoo: name, aliases, family, paper and a one-line description."""
    guard(partial(_run, fmt.value))


def _run(fmt: str) -> int:
    from cnnprof.models.zoo import zoo_info
    from cnnprof.report.render import emit
    from cnnprof.report.tables import zoo_report

    emit(fmt, *zoo_report(zoo_info()))
    return 0
