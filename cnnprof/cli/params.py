"""`cnnprof params`."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, DepthOpt, layer_depth, Format, ParamsBy, ModelsArg, FormatOpt, OutputOpt, SetOpt, InputShapeOpt, InputOpt, parse_inputs,
    layer_shapes, model_args, for_each_model, guard,
    add_overrides, open_output, emit_report)


@app.command()
def params(
    models: ModelsArg = None,
    by: Annotated[Optional[ParamsBy], typer.Option(
        help="Breakdown: stage (stem, stage1.., head), type (conv KxK, depthwise, pointwise, grouped, linear, "
             "norm, SE, other) or layer (module tree).", show_default=False)] = None,
    depth: DepthOpt = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Count parameters (total and trainable) of models, built on the meta device (no memory used)."""

    def body() -> int:
        from cnnprof.counting.params import count_params
        from cnnprof.cli.models_arg import resolve_arg
        from cnnprof.report.tables import params_report

        levels = layer_depth(depth, by is ParamsBy.layer)
        args, writer = model_args(models, set_), open_output(output)
        inputs = parse_inputs(input_shape_, input_)
        overrides: dict[str, dict] = {}  # row label -> effective overrides

        def work(arg):
            source = resolve_arg(arg)
            overrides[source.label] = arg.overrides()
            model = source.build("meta")
            # Input/output shapes per layer come from one forward on meta tensors (cheap); none if it fails.
            shapes = layer_shapes(source, model, inputs) if by is ParamsBy.layer else None
            return source.label, count_params(model), shapes

        def report(results):
            return add_overrides(params_report(results, by.value if by else None, levels), overrides)

        def produced(result):
            if writer:
                writer.add(*report([result])[1:])

        results, code = for_each_model(args, work, "Counting parameters of", name=lambda a: a.text,
                                       on_result=produced)
        emit_report(fmt.value, report(results), code, "models")
        return code

    guard(body)
