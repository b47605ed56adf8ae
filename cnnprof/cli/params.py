"""`cnnprof params`."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, DepthOpt, layer_depth, input_specs, Format, ParamsBy, ModelsArg, FormatOpt, OutputOpt, SetOpt, InputShapeOpt, InputOpt, parse_inputs,
    model_args, guard)
from cnnprof.cli.runs import ModelRun
from cnnprof.errors import CnnprofError


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
    settings = ParamsSettings(by.value if by else None, depth, input_shape_, input_)
    guard(partial(_run, settings, models, set_, fmt.value, output))


@dataclass(frozen=True)
class ParamsSettings:
    """What `cnnprof params` shows."""

    by: str | None
    depth: int | None
    input_shape: list[str] | None  # with --by layer: the input of the forward that gives each layer's shapes
    inputs: list[str] | None


def _count(by: str | None, inputs: Any, source: Any, arg: Any) -> tuple:
    """(label, ParamCount, per-layer input/output shapes or None) of one model, built on meta."""
    from cnnprof.counting.params import count_params

    model = source.build("meta")
    # Input/output shapes per layer come from one forward on meta tensors (cheap); none if it fails.
    shapes = layer_shapes(source, model, inputs) if by == "layer" else None
    return source.label, count_params(model, source.label), shapes


def layer_shapes(source: Any, model: Any, inputs: Any) -> dict[str, tuple] | None:
    """{module path: (input shape, output shape)} from one traced forward pass on meta, or None if the model
    cannot run on meta (params never runs a model for real)."""
    from cnnprof.counting.run import trace_model
    from cnnprof.counting.source import ModuleSource

    try:
        specs = input_specs(source, model, None, None, inputs)
        if not all(t.is_meta for t in model.parameters()):
            return None
        trace = trace_model(ModuleSource(model, source.label), list(specs) if specs is not None else None,
                            traffic=False)
    except CnnprofError:
        return None
    return {name: (i, o) for name, i, o in trace.module_shapes}


def _report(by: str | None, levels: int, results: list) -> Any:
    from cnnprof.report.tables import params_report

    return params_report(results, by, levels)


def _run(settings: ParamsSettings, models: list[str] | None, set_: list[str] | None, fmt: str,
         output: str | None) -> int:
    levels = layer_depth(settings.depth, settings.by == "layer")
    inputs = parse_inputs(settings.input_shape, settings.inputs)
    run = ModelRun(partial(_count, settings.by, inputs), partial(_report, settings.by, levels),
                   "Counting parameters of")
    return run.run(model_args(models, set_), fmt, output)
