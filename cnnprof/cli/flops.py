"""`cnnprof flops`."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, Format, Convention, Scope, Backend, FlopsBy, ModelsArg, FormatOpt, SetOpt, ConventionOpt, ScopeOpt,
    ResolutionOpt, InputShapeOpt, InputOpt, parse_overrides, parse_inputs, model_specs, for_each_model, guard,
    flops_of)


@app.command()
def flops(
    models: ModelsArg = None,
    convention: ConventionOpt = Convention.macc,
    scope: ScopeOpt = Scope.conv,
    resolution: ResolutionOpt = None,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help="Batch size N of every input (default: the model's declared batch, usually 1).",
        show_default=False)] = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    by: Annotated[Optional[FlopsBy], typer.Option(
        help="Breakdown with share %: layer (module tree, see --depth), op (aten op), stage, or type "
             "(conv KxK, depthwise, pointwise, grouped, linear, norm, activation, pooling, element-wise).",
        show_default=False)] = None,
    depth: Annotated[int, typer.Option(min=0, help="With --by layer: deepest module level shown.")] = 2,
    backend: Annotated[Backend, typer.Option(
        help="torch: dispatch-level counting on the meta device (no memory, any batch/resolution); "
             "fvcore: fvcore's JIT-traced FlopCountAnalysis on real CPU tensors, as a cross-check (conv scope).")
    ] = Backend.torch,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Count FLOPs of one forward pass under an explicit convention and scope; lists uncounted ops."""

    def body() -> int:
        from cnnprof.report.render import emit
        from cnnprof.report.tables import flops_report

        overrides, shape = parse_overrides(set_), parse_inputs(input_shape_, input_)
        per_module = by is FlopsBy.layer
        results, code = for_each_model(
            model_specs(models),
            lambda spec: flops_of(spec, overrides, scope.value, backend.value, batch_size, resolution, shape,
                                   per_module),
            "Counting FLOPs of")
        if results:
            emit(fmt.value, *flops_report(results, convention.value, by.value if by else None, depth))
        return code

    guard(body)
