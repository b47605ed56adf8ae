"""`cnnprof match`."""
from __future__ import annotations

import math
from dataclasses import replace
from enum import Enum
from functools import partial
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, Format, Convention, Scope, FormatOpt, ConventionOpt, ScopeOpt, ResolutionOpt, InputShapeOpt, InputOpt,
    OutputOpt, guard)
from cnnprof.cli.device import DeviceSpecOpt, PredictThreadsOpt
from cnnprof.cli.sweep import (
    BenchTimeOpt, DesignRun, DeviceOpt, GridOpt, Measuring, PlotOpt, PredictOpt, YesOpt)
from cnnprof.cli.common import Device, print_note


class MatchMetric(str, Enum):
    macs = "macs"
    params = "params"
    acts = "acts"
    latency = "latency"


@app.command()
def match(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name, YAML config or module:callable to adjust.")],
    vary: Annotated[str, typer.Option("--vary", metavar="KNOB", help="The numeric knob to adjust (integer or float, as "
                                                                   "its value in the config or --range).")],
    to: Annotated[Optional[str], typer.Option("--to", metavar="MODEL", help="Reference model whose cost to match.",
                                              show_default=False)] = None,
    target: Annotated[Optional[str], typer.Option("--target", metavar="VALUE", show_default=False,
                                                  help="Or a cost to match, e.g. 400M (macs/params) or 15ms.")] = None,
    set_: GridOpt = None,
    metric: Annotated[MatchMetric, typer.Option(help="What to match: macs, params, acts, or latency (measured by "
                                                     "running the model, or predicted with --predict).")] = MatchMetric.macs,
    range_: Annotated[Optional[str], typer.Option("--range", metavar="LOW:HIGH", show_default=False,
                                                  help="Bracket to search (default: grow from the config's value).")] = None,
    tol: Annotated[float, typer.Option(min=1e-9, help="Float knobs: stop bisecting at this relative width.")] = 1e-3,
    convention: ConventionOpt = Convention.macc,
    scope: ScopeOpt = Scope.conv,
    resolution: ResolutionOpt = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    predict: PredictOpt = False,
    device_spec: DeviceSpecOpt = None,
    device: DeviceOpt = Device.cpu,
    min_time: BenchTimeOpt = 0.5,
    plot: PlotOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    yes: YesOpt = False,
    threads: PredictThreadsOpt = None,
) -> None:
    """Find the knob value that makes MODEL cost what a reference costs (iso-complexity, ResNeXt Table 2)."""
    how = Measuring(scope.value, resolution, False, predict, device.value, device_spec, min_time,
                    input_shape=input_shape_, inputs=input_, threads=threads)
    run = DesignRun("row", yes, output, _match_report)
    guard(partial(_match, model, vary, set_, how, run, metric=metric.value, to=to, target=target, range_=range_, tol=tol,
                  convention=convention.value, plot=plot, fmt=fmt.value))


def _match_report(result: Any) -> Any:
    from cnnprof.report.design import match_report

    return match_report(result)


def _match(model: str, vary: str, grid: list[str] | None, how: Measuring, run: DesignRun, *, metric: str,
           to: str | None, target: str | None, range_: str | None, tol: float, convention: str, plot: str | None,
           fmt: str) -> int:
    """`cnnprof match`: per setting of the --set knobs, the value of --vary closest to the reference's cost."""
    from cnnprof.design.match import match, parse_range, parse_target
    from cnnprof.design.sweep import parse_axes
    from cnnprof.report.design import check_plot_path, plot_match

    check_plot_path(plot)
    profile = how.profile()
    how = replace(how, bench=metric == MatchMetric.latency.value and profile is None)  # latency is measured
    settings = how.settings(profile)
    how.check_device()
    value = parse_target(metric, target)
    axes, fixed = parse_axes(grid)
    units = math.prod(len(v) for v in axes.values())
    run.check_units(units)
    result = run.run(partial(
        match, model, vary, metric, reference=to, target=value, axes=axes, fixed=fixed, bounds=parse_range(range_),
        settings=settings, convention=convention, tol=tol), "Matching")
    code = run.emit(fmt, result, len(result.rows), units)
    if plot and result.rows:
        plot_match(result, plot)
        print_note(f"wrote {plot}")
    return code or (0 if any(r.value is not None for r in result.rows) else 2)
