"""`cnnprof sweep`."""
from __future__ import annotations

from enum import Enum
from typing import Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.device import DeviceSpecOpt, requested_profile
from cnnprof.errors import CnnprofError
from cnnprof.cli.common import (
    app, err, Format, Convention, Scope, Device, FormatOpt, ConventionOpt, ScopeOpt, ResolutionOpt, guard)

GridOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=V1[,V2,...]",
    help="A knob and its values (repeatable): a comma list is one axis of the grid (width_mult=1,0.75,0.5), "
         "a single value overrides every point (groups=32). Params, dotted paths (stages.2.depth) or a "
         "module:callable's keywords.", show_default=False)]
PlotOpt = Annotated[Optional[str], typer.Option(
    "--plot", metavar="FILE.png|.svg", help="Draw the result to an image file (matplotlib).", show_default=False)]
BenchOpt = Annotated[bool, typer.Option("--bench", help="Also measure the median forward latency of every point "
                                                        "(runs the model; slow).")]
DeviceOpt = Annotated[Device, typer.Option(help="With --bench: where to run the model; with --predict: whose "
                                                "profile to use.")]
PredictOpt = Annotated[bool, typer.Option("--predict", help="Predict latency from the device profile (cnnprof device, "
                                                            "see `cnnprof roofline`) instead of running the model.")]
BenchTimeOpt = Annotated[float, typer.Option("--min-time", min=0.0, help="With --bench: seconds of timed runs per point.")]


def prediction_profile(predict: bool, bench: bool, device: str, device_spec: str | None):
    """The device profile latency is predicted from (None without --predict); a design command measures
    latency (--bench) or predicts it (--predict), not both."""
    if predict and bench:
        raise CnnprofError("--bench measures latency and --predict predicts it: give one of them")
    return requested_profile(predict, device, device_spec)


class YAxis(str, Enum):
    params = "params"
    latency = "latency"


@app.command()
def sweep(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name, YAML config or module:callable.")],
    set_: GridOpt = None,
    convention: ConventionOpt = Convention.macc,
    scope: ScopeOpt = Scope.conv,
    resolution: ResolutionOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size N of the input.")] = 1,
    bench: BenchOpt = False,
    predict: PredictOpt = False,
    device_spec: DeviceSpecOpt = None,
    device: DeviceOpt = Device.cpu,
    min_time: BenchTimeOpt = 0.5,
    plot: PlotOpt = None,
    y: Annotated[YAxis, typer.Option("--y", help="Plot's y axis: params, or latency (needs --bench or --predict).")] = YAxis.params,
    fmt: FormatOpt = Format.table,
) -> None:
    """Count (and optionally time) a model over a grid of knob values, e.g. MobileNet's width and resolution multipliers."""

    def body() -> int:
        from cnnprof.design.metrics import Settings
        from cnnprof.design.sweep import parse_axes, sweep as run_sweep
        from cnnprof.report.design import check_plot_path, plot_sweep, sweep_report
        from cnnprof.report.render import emit

        check_plot_path(plot)
        if y is YAxis.latency and not (bench or predict):
            raise CnnprofError("--y latency needs --bench or --predict")
        profile = prediction_profile(predict, bench, device.value, device_spec)
        if bench:
            from cnnprof.timing.runtime import check_device

            check_device(device.value)
        axes, fixed = parse_axes(set_)
        settings = Settings(scope=scope.value, resolution=resolution, batch_size=batch_size, bench=bench,
                            device=device.value, min_time=min_time, profile=profile)
        result = _with_progress(lambda cb: run_sweep(model, axes, fixed, settings, cb), "Sweeping")
        emit(fmt.value, *sweep_report(result, convention.value))
        if plot:
            plot_sweep(result, plot, y.value, convention.value)
            err.print(f"wrote {plot}", markup=False)
        bad = [p for p in result.points if not p.ok]
        return 0 if len(bad) < len(result.points) else 2

    guard(body)


def _with_progress(run, what: str):
    """Run `run(callback)` under a progress bar on stderr (only when stderr is a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(what, total=None)
        return run(lambda done, total: progress.update(task, completed=done, total=total))
