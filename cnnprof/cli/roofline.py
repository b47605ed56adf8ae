"""`cnnprof roofline`."""
from __future__ import annotations

from enum import Enum
from typing import Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, Format, Device, DType, ModelsArg, FormatOpt, SetOpt, ResolutionOpt, InputShapeOpt, parse_overrides,
    parse_input_shape, model_specs, for_each_model, guard, input_shape)
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
        from cnnprof.analysis.latency import predict_latency
        from cnnprof.models.spec import resolve
        from cnnprof.report.render import emit
        from cnnprof.report.roofline import plot_roofline, roofline_report

        if plot and not plot.lower().endswith((".png", ".svg")):
            raise CnnprofError(f"--plot {plot!r}: the file name must end in .png or .svg")
        overrides, shape = parse_overrides(set_), parse_input_shape(input_shape_)
        profile = profile_for(device.value, device_spec, dtype.value)

        def work(spec: str):
            source = resolve(spec, overrides)
            return predict_latency(source, input_shape(source, batch_size, resolution, shape), profile, dtype.value)

        preds, code = for_each_model(model_specs(models), work, "Placing on the roofline")
        if preds:
            if plot:  # before the tables, so that `| head` does not lose the file
                plot_roofline(preds, plot)
            emit(fmt.value, *roofline_report(preds, by.value))
        return code

    guard(body)
