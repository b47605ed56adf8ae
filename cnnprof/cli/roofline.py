"""`cnnprof roofline`."""
from __future__ import annotations

from enum import Enum
from typing import Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, Format, Device, DType, ModelsArg, FormatOpt, SetOpt, ResolutionOpt, InputShapeOpt, InputOpt, parse_inputs,
    input_specs, model_args, add_overrides, for_each_model, guard)
from cnnprof.cli.device import DeviceSpecOpt, profile_for
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
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size N of the input.")] = 1,
    resolution: ResolutionOpt = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    by: Annotated[RooflineBy, typer.Option(help="Rows: layer (every op of every module), type (conv KxK, depthwise, "
                                                "pointwise, ..., norm, activation) or stage.")] = RooflineBy.layer,
    plot: Annotated[Optional[str], typer.Option(metavar="FILE.png|FILE.svg", show_default=False,
                                                help="Also draw the log-log roofline chart to this file.")] = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Place every layer on the device's roofline: bytes moved, intensity, attainable FLOP/s, bound, and
    predicted time (roofline and calibrated) next to its share of MACs."""

    def body() -> int:
        from dataclasses import replace

        from cnnprof.predict.latency import predict_latency
        from cnnprof.cli.models_arg import resolve_arg
        from cnnprof.report.render import emit
        from cnnprof.report.roofline import plot_roofline, roofline_report

        if plot and not plot.lower().endswith((".png", ".svg")):
            raise CnnprofError(f"--plot {plot!r}: the file name must end in .png or .svg")
        args, explicit = model_args(models, set_), parse_inputs(input_shape_, input_)
        profile = profile_for(device.value, device_spec, dtype.value)
        overrides: dict[str, dict] = {}  # row label -> effective overrides

        def work(arg):
            source = resolve_arg(arg)
            overrides[source.label] = arg.overrides()
            source = replace(source, module=source.build("meta"))  # built once, for its declared inputs too
            specs = input_specs(source, source.module, batch_size, resolution, explicit)
            return predict_latency(source, None, profile, dtype.value,
                                   inputs=list(specs) if specs is not None else None)

        preds, code = for_each_model(args, work, "Placing on the roofline", name=lambda a: a.text)
        if preds:
            if plot:  # before the tables, so that `| head` does not lose the file
                plot_roofline(preds, plot)
            emit(fmt.value, *add_overrides(roofline_report(preds, by.value), overrides))
        return code

    guard(body)
