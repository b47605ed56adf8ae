"""`cnnprof params`."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, Format, ParamsBy, ModelsArg, FormatOpt, SetOpt, InputShapeOpt, InputOpt, parse_overrides, parse_inputs,
    model_specs, for_each_model, guard, layer_shapes)


@app.command()
def params(
    models: ModelsArg = None,
    by: Annotated[Optional[ParamsBy], typer.Option(
        help="Breakdown: stage (stem, stage1.., head), type (conv KxK, depthwise, pointwise, grouped, linear, "
             "norm, SE, other) or layer (module tree).", show_default=False)] = None,
    depth: Annotated[int, typer.Option(min=0, help="With --by layer: deepest module level shown.")] = 2,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Count parameters (total and trainable) of models, built on the meta device (no memory used)."""

    def body() -> int:
        from cnnprof.analysis.params import count_params
        from cnnprof.models.spec import resolve
        from cnnprof.report.render import emit
        from cnnprof.report.tables import params_report

        overrides, inputs = parse_overrides(set_), parse_inputs(input_shape_, input_)

        def work(spec: str):
            source = resolve(spec, overrides)
            model = source.build("meta")
            # Input/output shapes per layer come from one forward on meta tensors (cheap); none if it fails.
            shapes = layer_shapes(source, model, inputs) if by is ParamsBy.layer else None
            return source.label, count_params(model), shapes

        results, code = for_each_model(model_specs(models), work, "Counting parameters of")
        if results:
            emit(fmt.value, *params_report(results, by.value if by else None, depth))
        return code

    guard(body)
