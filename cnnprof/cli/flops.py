"""`cnnprof flops`."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, DepthOpt, layer_depth, Format, Convention, Scope, Backend, FlopsBy, ModelsArg, FormatOpt, OutputOpt, SetOpt, ConventionOpt,
    ScopeOpt, ResolutionOpt, InputShapeOpt, InputOpt, BatchSizesOpt, parse_inputs, parse_batch_sizes, model_args,
    for_each_model, guard, flops_of, add_overrides, open_output, emit_report)
from cnnprof.errors import CnnprofError


@app.command()
def flops(
    models: ModelsArg = None,
    convention: ConventionOpt = Convention.macc,
    scope: ScopeOpt = Scope.conv,
    resolution: ResolutionOpt = None,
    batch_size: BatchSizesOpt = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    by: Annotated[Optional[FlopsBy], typer.Option(
        help="Breakdown with share %: layer (module tree, see --depth), op (aten op), stage, or type "
             "(conv KxK, depthwise, pointwise, grouped, linear, norm, SE, activation, pooling, element-wise).",
        show_default=False)] = None,
    depth: DepthOpt = None,
    backend: Annotated[Backend, typer.Option(
        help="torch: dispatch-level counting on the meta device (no memory, any batch/resolution); "
             "fvcore: fvcore's JIT-traced FlopCountAnalysis on real CPU tensors, as a cross-check (conv scope).")
    ] = Backend.torch,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Count FLOPs of one forward pass under an explicit convention and scope; lists uncounted ops."""

    def body() -> int:
        from cnnprof.cli.models_arg import resolve_arg
        from cnnprof.report.tables import flops_report

        levels = layer_depth(depth, by is FlopsBy.layer)
        shape = parse_inputs(input_shape_, input_)
        if shape is not None and batch_size is not None:
            raise CnnprofError("--batch-size has no effect with --input-shape / --input (their first dimension is "
                               "the batch)")
        sizes = parse_batch_sizes(batch_size) if batch_size is not None else [None]
        args, writer = model_args(models, set_), open_output(output)
        per_module = by is FlopsBy.layer
        overrides: dict[str, dict] = {}  # row label -> effective overrides

        def work(job):
            arg, b = job
            source = resolve_arg(arg)
            overrides[source.label] = arg.overrides()
            return flops_of(source, {}, scope.value, backend.value, b, resolution, shape, per_module)

        def report(results):
            return add_overrides(flops_report(results, convention.value, by.value if by else None, levels), overrides)

        def produced(result):
            if writer:
                writer.add(*report([result])[1:])

        jobs = [(arg, b) for arg in args for b in sizes]
        results, code = for_each_model(jobs, work, "Counting FLOPs of", on_result=produced,
                                       name=lambda j: j[0].text + (f" (batch {j[1]})" if len(sizes) > 1 else ""))
        emit_report(fmt.value, report(results), code, "models")
        return code

    guard(body)
