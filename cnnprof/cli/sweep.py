"""`cnnprof sweep`, and what the design commands (sweep, match, search) share: options, settings, progress."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Any, Callable, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.device import DeviceSpecOpt, PredictThreadsOpt, requested_profile
from cnnprof.errors import CnnprofError
from cnnprof.cli.common import (
    app, err, Format, Convention, Scope, Device, FormatOpt, ConventionOpt, ScopeOpt, ResolutionOpt, InputShapeOpt,
    InputOpt, OutputOpt, explicit_inputs, guard, emit_report, open_output, interruptible, soft_interrupts,
    interrupt_requested, INTERRUPTED)
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
BenchTimeOpt = Annotated[float, typer.Option("--min-time", min=0.0, max=3600.0,
                                             help="With --bench: seconds of timed runs per point (at most 3600).")]

MAX_UNITS = 10_000  # a grid of more points (match: rows) is refused before anything runs, without --yes
MAX_SECONDS = 600.0  # a run estimated longer than this from its first point (or row) is refused, without --yes
SHOW_ESTIMATE_S = 30.0  # the estimate is printed for runs of at least this long (or of 100 units and more)
YesOpt = Annotated[bool, typer.Option(
    "--yes", "-y", help=f"Run a grid of more than {MAX_UNITS:,} points, or one estimated (from its first point) "
                        f"at more than {MAX_SECONDS / 60:.0f} minutes, instead of refusing it.")]


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


def _duration(seconds: float) -> str:
    """12.3 -> '12 s', 754 -> '12.6 min', 9000 -> '2.5 h'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


@dataclass
class DesignRun:
    """What sweep and match do around their library call: refuse a run too large (before it starts, and from the
    time of its first unit), stream every finished unit to --output, and stop between units on Ctrl-C or SIGTERM
    keeping the finished ones (exit 130)."""

    unit: str  # "point" or "row"
    yes: bool
    output: str | None
    report: Callable[[Any], Any]  # a result (or a part of one) -> the report layer's Report
    writer: Any = field(default=None, init=False)

    def check_units(self, units: int) -> None:
        """Refuse a grid above MAX_UNITS without --yes, before anything runs."""
        if units > MAX_UNITS and not self.yes:
            raise CnnprofError(f"{units:,} {self.unit}s to evaluate, above the limit of {MAX_UNITS:,}; use fewer "
                               f"values, or add --yes to run them all")

    def _first(self, units: int, seconds: float) -> None:
        total = units * seconds
        if total > MAX_SECONDS and not self.yes:
            raise CnnprofError(f"{units:,} {self.unit}s would take about {_duration(total)} ({seconds:.2f} s for the "
                               f"first), above the limit of {MAX_SECONDS / 60:.0f} minutes; use fewer values, or add "
                               f"--yes to run it (--output keeps the {self.unit}s as they finish)")
        if total >= min(SHOW_ESTIMATE_S, MAX_SECONDS) or units >= 100:
            print_note(f"{units:,} {self.unit}s, about {_duration(total)} ({seconds:.2f} s for the first)")

    def _stream(self, part: Any) -> None:
        self.writer.add(*self.report(part)[1:])

    def run(self, call: Callable[..., Any], what: str) -> Any:
        """`call(progress=..., watch=...)` under a progress bar, with --output open and Ctrl-C kept soft."""
        from cnnprof.design.sweep import Watch

        self.writer = open_output(self.output)
        watch = Watch(on_part=self._stream if self.writer else None, on_first=self._first, stop=interrupt_requested)
        with interruptible(), soft_interrupts():
            return with_progress(partial(call, watch=watch), what)

    def emit(self, fmt: str, result: Any, done: int, units: int) -> int:
        """Print the report; 130 (after saying so) when the run was stopped, else 0."""
        code = 0 if result.complete else INTERRUPTED
        if code:
            err.print(f"interrupted: {done} of {units} {self.unit}s done; showing those", markup=False)
        emit_report(fmt, self.report(result), code, f"{self.unit}s")
        return code


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
    output: OutputOpt = None,
    yes: YesOpt = False,
    threads: PredictThreadsOpt = None,
) -> None:
    """Count (and optionally time) a model over a grid of knob values, e.g. MobileNet's width and resolution multipliers."""
    how = Measuring(scope.value, resolution, bench, predict, device.value, device_spec, min_time, batch_size,
                    input_shape_, input_, threads=threads)
    run = DesignRun("point", yes, output, partial(_sweep_report, convention=convention.value))
    guard(partial(_sweep, model, set_, how, run, convention=convention.value, y=y.value, plot=plot, fmt=fmt.value))


def _sweep_report(result: Any, convention: str) -> Any:
    from cnnprof.report.design import sweep_report

    return sweep_report(result, convention)


def _sweep(model: str, grid: list[str] | None, how: Measuring, run: DesignRun, *, convention: str, y: str,
           plot: str | None, fmt: str) -> int:
    """`cnnprof sweep`: every point of the grid, as a table (or JSON/CSV) and optionally a plot."""
    from cnnprof.design.sweep import parse_axes, sweep as sweep_grid
    from cnnprof.report.design import check_plot_path, plot_sweep

    check_plot_path(plot)
    if y == YAxis.latency.value and not (how.bench or how.predict):
        raise CnnprofError("--y latency needs --bench or --predict")
    settings = how.settings(how.profile())
    how.check_device()
    axes, fixed = parse_axes(grid)
    units = math.prod(len(v) for v in axes.values())
    run.check_units(units)
    result = run.run(partial(sweep_grid, model, axes, fixed, settings), "Sweeping")
    code = run.emit(fmt, result, len(result.points), units)
    if plot and result.points:
        plot_sweep(result, plot, y, convention)
        print_note(f"wrote {plot}")
    return code or (0 if any(p.ok for p in result.points) else 2)


def with_progress(run: Callable[..., Any], what: str) -> Any:
    """Run `run(progress=callback)` under a progress bar on stderr (only when stderr is a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(what, total=None)
        return run(progress=partial(_advance, progress, task))


def _advance(progress: Any, task: Any, done: int, total: int) -> None:
    progress.update(task, completed=done, total=total)
