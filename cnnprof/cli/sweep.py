"""`cnnprof sweep`, and what the design commands (sweep, match, search) share: options, settings, progress."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import Any, Callable, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.device import DeviceSpecOpt, PredictThreadsOpt, requested_profile
from cnnprof.errors import CnnprofError
from cnnprof.cli.common import (
    app, err, Format, Convention, Scope, Device, FormatOpt, ConventionOpt, ScopeOpt, ResolutionOpt, InputShapeOpt,
    InputOpt, explicit_inputs, guard)
from cnnprof.cli.common import print_note

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


def prediction_profile(predict: bool, bench: bool, device: str, device_spec: str | None,
                       threads: int | None = None):
    """The device profile latency is predicted from (None without --predict), of `threads` CPU threads; a design
    command measures latency (--bench) or predicts it (--predict), not both."""
    if predict and bench:
        raise CnnprofError("--bench measures latency and --predict predicts it: give one of them")
    if threads is not None and not predict:
        raise CnnprofError("--threads applies only with --predict (the thread count whose device profile is used)")
    return requested_profile(predict, device, device_spec, threads)


@dataclass(frozen=True)
class Measuring:
    """How a design command measures each point, as given on its command line (checked when used)."""

    scope: str
    resolution: int | None
    bench: bool
    predict: bool
    device: str
    device_spec: str | None
    min_time: float
    batch_size: int | None = None  # None: not given (batch 1 of the declared input)
    input_shape: list[str] | None = None  # --input-shape / --input: every point runs on them, as given
    inputs: list[str] | None = None
    threads: int | None = None  # --threads: the thread count whose device profile --predict uses

    def profile(self) -> Any:
        """The device profile to predict latency from (None without --predict)."""
        return prediction_profile(self.predict, self.bench, self.device, self.device_spec, self.threads)

    def check_device(self) -> None:
        """With --bench, fail now (one line, exit 2) when the device is missing, before anything is measured."""
        if self.bench:
            from cnnprof.timing.settings import check_device

            check_device(self.device)

    def explicit(self) -> Any:
        """The InputSpecs of --input-shape / --input (None without them), checked against --resolution and
        --batch-size (errors now, before any point is measured)."""
        return explicit_inputs(self.input_shape, self.inputs, self.resolution, self.batch_size)

    def settings(self, profile: Any) -> Any:
        """The design library's Settings: counted on these inputs (or the declared input at this batch size and
        resolution), latency measured or predicted on the same inputs."""
        from cnnprof.design.metrics import Settings

        return Settings(scope=self.scope, resolution=self.resolution,
                        batch_size=self.batch_size if self.batch_size is not None else 1, inputs=self.explicit(),
                        bench=self.bench, device=self.device, min_time=self.min_time, profile=profile)


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
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, show_default=False, help="Batch size N of the input (default 1); with --input-shape / --input "
                                        "their first dimension is the batch.")] = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    bench: BenchOpt = False,
    predict: PredictOpt = False,
    device_spec: DeviceSpecOpt = None,
    device: DeviceOpt = Device.cpu,
    min_time: BenchTimeOpt = 0.5,
    plot: PlotOpt = None,
    y: Annotated[YAxis, typer.Option("--y", help="Plot's y axis: params, or latency (needs --bench or --predict).")] = YAxis.params,
    fmt: FormatOpt = Format.table,
    threads: PredictThreadsOpt = None,
) -> None:
    """Count (and optionally time) a model over a grid of knob values, e.g. MobileNet's width and resolution multipliers."""
    how = Measuring(scope.value, resolution, bench, predict, device.value, device_spec, min_time, batch_size,
                    input_shape_, input_, threads=threads)
    guard(partial(_sweep, model, set_, how, convention=convention.value, y=y.value, plot=plot, fmt=fmt.value))


def _sweep(model: str, grid: list[str] | None, how: Measuring, *, convention: str, y: str, plot: str | None,
              fmt: str) -> int:
    """`cnnprof sweep`: every point of the grid, as a table (or JSON/CSV) and optionally a plot."""
    from cnnprof.design.sweep import parse_axes, sweep as sweep_grid
    from cnnprof.report.design import check_plot_path, plot_sweep, sweep_report
    from cnnprof.report.render import emit

    check_plot_path(plot)
    if y == YAxis.latency.value and not (how.bench or how.predict):
        raise CnnprofError("--y latency needs --bench or --predict")
    settings = how.settings(how.profile())
    how.check_device()
    axes, fixed = parse_axes(grid)
    result = with_progress(partial(sweep_grid, model, axes, fixed, settings), "Sweeping")
    emit(fmt, *sweep_report(result, convention))
    if plot:
        plot_sweep(result, plot, y, convention)
        print_note(f"wrote {plot}")
    return 0 if any(p.ok for p in result.points) else 2


def with_progress(run: Callable[..., Any], what: str) -> Any:
    """Run `run(progress=callback)` under a progress bar on stderr (only when stderr is a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(what, total=None)
        return run(progress=partial(_advance, progress, task))


def _advance(progress: Any, task: Any, done: int, total: int) -> None:
    progress.update(task, completed=done, total=total)
