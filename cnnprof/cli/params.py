"""`cnnprof params`."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, Format, ParamsBy, ModelsArg, FormatOpt, OutputOpt, SetOpt, model_args, for_each_model, guard,
    add_overrides, open_output, emit_report)
from cnnprof.errors import CnnprofError


@app.command()
def params(
    models: ModelsArg = None,
    by: Annotated[Optional[ParamsBy], typer.Option(
        help="Breakdown: stage (stem, stage1.., head), type (conv KxK, depthwise, pointwise, grouped, linear, "
             "norm, SE, other) or layer (module tree).", show_default=False)] = None,
    depth: Annotated[Optional[int], typer.Option(min=0, help="With --by layer: deepest module level shown.",
                                                 show_default=False)] = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Count parameters (total and trainable) of models, built on the meta device (no memory used)."""

    def body() -> int:
        from cnnprof.analysis.params import count_params
        from cnnprof.cli.models_arg import resolve_arg
        from cnnprof.report.tables import params_report

        if depth is not None and by is not ParamsBy.layer:
            raise CnnprofError("--depth applies to --by layer only; add --by layer or drop --depth")
        args, writer = model_args(models, set_), open_output(output)
        overrides: dict[str, dict] = {}  # row label -> effective overrides

        def work(arg):
            source = resolve_arg(arg)
            overrides[source.label] = arg.overrides()
            return source.label, count_params(source.build("meta"))

        def report(results):
            return add_overrides(params_report(results, by.value if by else None, depth), overrides)

        def produced(result):
            if writer:
                writer.add(*report([result])[1:])

        results, code = for_each_model(args, work, "Counting parameters of", name=lambda a: a.text,
                                       on_result=produced)
        emit_report(fmt.value, report(results), code, "models")
        return code

    guard(body)
