"""`cnnprof flops`."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import Any, List, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, DepthOpt, layer_depth, Format, Convention, Scope, Backend, FlopsBy, ModelsArg, FormatOpt, OutputOpt, SetOpt, ConventionOpt,
    ScopeOpt, ResolutionOpt, InputShapeOpt, InputOpt, BatchSizesOpt, explicit_inputs, parse_batch_sizes, model_args,
    guard)
from cnnprof.cli.runs import ModelRun, job_name


class Mode(str, Enum):
    infer = "infer"
    train = "train"


ModeOpt = Annotated[Mode, typer.Option(
    help="infer: one forward pass (inference); train: one training step, the forward in train() mode plus autograd's "
         "backward (input and weight gradients), counted op by op on meta tensors.")]
FrozenOpt = Annotated[Optional[List[str]], typer.Option(
    "--frozen", metavar="PATTERN", show_default=False,
    help="With --mode train: parameters that get no gradient, as in fine-tuning: a module path (stem, stage1.0) or "
         "a glob of parameter names (stage[12].*, *.norm.*); repeatable. requires_grad=False is honoured too.")]


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
    mode: ModeOpt = Mode.infer,
    frozen: FrozenOpt = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Count FLOPs of one forward pass (or, with --mode train, of one training step) under an explicit convention
    and scope; lists uncounted ops."""
    settings = FlopsSettings(convention.value, scope.value, backend.value, by.value if by else None, depth,
                             resolution, input_shape_, input_, mode.value, tuple(frozen or ()))
    guard(partial(_run, settings, models, set_, batch_size, fmt.value, output))


@dataclass(frozen=True)
class FlopsSettings:
    """What `cnnprof flops` counts and shows."""

    convention: str
    scope: str
    backend: str
    by: str | None
    depth: int | None
    resolution: int | None
    input_shape: list[str] | None
    inputs: list[str] | None
    mode: str = "infer"
    frozen: tuple[str, ...] = ()


def _count(settings: FlopsSettings, specs: Any, source: Any, job: tuple) -> tuple:
    """(FlopCount, params, params per module or None) of one (model, batch size) job."""
    from cnnprof.profiling.profile import count_model

    train = {"mode": "train", "frozen": settings.frozen} if settings.mode == "train" else {}
    fc, pc = count_model(source, settings.scope, settings.backend, job[1], settings.resolution, specs, **train)
    return fc, pc.total, dict(pc.by_module) if settings.by == "layer" else None


def _report(settings: FlopsSettings, levels: int, results: list) -> Any:
    from cnnprof.report.tables import flops_report

    return flops_report(results, settings.convention, settings.by, levels)


def _run(settings: FlopsSettings, models: list[str] | None, set_: list[str] | None, batch_size: str | None,
         fmt: str, output: str | None) -> int:
    from cnnprof.counting.flops import check_mode

    check_mode(settings.mode, settings.backend, settings.frozen)
    levels = layer_depth(settings.depth, settings.by == "layer")
    specs = explicit_inputs(settings.input_shape, settings.inputs, settings.resolution, batch_size)
    sizes = parse_batch_sizes(batch_size) if batch_size is not None else [None]
    jobs = [(arg, b) for arg in model_args(models, set_) for b in sizes]
    name = job_name if len(sizes) == 1 else _batch_job_name
    run = ModelRun(partial(_count, settings, specs), partial(_report, settings, levels), "Counting FLOPs of", name)
    return run.run(jobs, fmt, output)


def _batch_job_name(job: tuple) -> str:
    return f"{job[0].text} (batch {job[1]})"
