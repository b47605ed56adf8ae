"""`cnnprof roofline`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from functools import partial
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, Format, Device, DType, ModelsArg, FormatOpt, OutputOpt, SetOpt, ResolutionOpt, InputShapeOpt, InputOpt,
    explicit_inputs, input_specs, model_args, guard, emit_report)
from cnnprof.cli.runs import ModelRun
from cnnprof.cli.device import DeviceSpecOpt, PredictThreadsOpt, profile_for
from cnnprof.errors import CnnprofError


class RooflineBy(str, Enum):
    layer = "layer"
    type = "type"
    stage = "stage"


@app.command()
def roofline(
    models: ModelsArg = None,
    device: Annotated[Device, typer.Option(help="Device whose measured profile is used (see `cnnprof device`).")] = Device.cpu,
    device_spec: DeviceSpecOpt = None,
    dtype: Annotated[DType, typer.Option(help="Data type: bytes per element and the peak used.")] = DType.float32,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, show_default=False, help="Batch size N of every input (default 1); with --input-shape / --input "
                                        "their first dimension is the batch.")] = None,
    resolution: ResolutionOpt = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    by: Annotated[RooflineBy, typer.Option(help="Rows: layer (every op of every module), type (conv KxK, depthwise, "
                                                "pointwise, ..., norm, activation) or stage.")] = RooflineBy.layer,
    plot: Annotated[Optional[str], typer.Option(metavar="FILE.png|FILE.svg", show_default=False,
                                                help="Also draw the log-log roofline chart to this file.")] = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    threads: PredictThreadsOpt = None,
) -> None:
    """Place every layer on the device's roofline: bytes moved, intensity, attainable FLOP/s, bound, and
    predicted time (roofline and calibrated) next to its share of MACs."""
    settings = RooflineSettings(device.value, device_spec, dtype.value, batch_size, resolution, input_shape_, input_,
                                by.value, plot, threads)
    guard(partial(_run, settings, models, set_, fmt.value, output))


@dataclass(frozen=True)
class RooflineSettings:
    """What `cnnprof roofline` predicts, on which device profile, and how it shows it."""

    device: str
    device_spec: str | None
    dtype: str
    batch_size: int | None  # None: not given (batch 1, or the batch of explicit inputs)
    resolution: int | None
    input_shape: list[str] | None
    inputs: list[str] | None
    by: str
    plot: str | None
    threads: int | None = None  # the thread count whose device profile is used (None: torch's)


def _predict(settings: RooflineSettings, explicit: Any, profile: Any, source: Any, arg: Any) -> Any:
    """The LatencyPrediction of one model: built once on meta, for its declared inputs too."""
    from cnnprof.predict.latency import predict_latency

    source = replace(source, module=source.build("meta"))
    batch = settings.batch_size if settings.batch_size is not None else 1
    specs = input_specs(source, source.module, batch, settings.resolution, explicit)
    return predict_latency(source, None, profile, settings.dtype, inputs=list(specs) if specs is not None else None)


def _run(settings: RooflineSettings, models: list[str] | None, set_: list[str] | None, fmt: str,
         output: str | None) -> int:
    from cnnprof.report.design import check_plot_dir
    from cnnprof.report.roofline import plot_roofline, roofline_report

    if settings.plot and not settings.plot.lower().endswith((".png", ".svg")):
        raise CnnprofError(f"--plot {settings.plot!r}: the file name must end in .png or .svg")
    check_plot_dir(settings.plot)
    explicit = explicit_inputs(settings.input_shape, settings.inputs, settings.resolution, settings.batch_size)
    args = model_args(models, set_)
    profile = profile_for(settings.device, settings.device_spec, settings.dtype, settings.threads, measure_layers=True)
    run = ModelRun(partial(_predict, settings, explicit, profile), partial(roofline_report, by=settings.by),
                   "Placing on the roofline")
    preds, code = run.results(args, output)
    if preds:
        if settings.plot:  # before the tables, so that `| head` does not lose the file
            plot_roofline(preds, settings.plot)
        emit_report(fmt, run.rendered(preds), code, "models")
    return code
