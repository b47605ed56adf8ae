"""`cnnprof memory`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from functools import partial
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, Format, Device, DType, ModelsArg, FormatOpt, OutputOpt, SetOpt, ResolutionOpt, BatchSizesOpt, InputShapeOpt,
    InputOpt, explicit_inputs, input_specs, model_args, guard, parse_batch_sizes)
from cnnprof.cli.flops import Mode  # one --mode infer|train for every command
from cnnprof.cli.runs import ModelRun, job_name
from cnnprof.errors import CnnprofError


class Optimizer(str, Enum):
    sgd = "sgd"
    momentum = "momentum"
    adam = "adam"
    adamw = "adamw"


ModeOpt = Annotated[Mode, typer.Option(help="infer: one forward pass (no_grad); train: one training step (forward, "
                                            "loss, backward, optimizer step).")]
OptimizerOpt = Annotated[Optimizer, typer.Option(help="Optimizer of a training step: sgd (no state), momentum (one "
                                                      "buffer per parameter), adam / adamw (two).")]


@app.command("memory")
def memory_cmd(
    models: ModelsArg = None,
    mode: ModeOpt = Mode.infer,
    batch_size: BatchSizesOpt = None,
    resolution: ResolutionOpt = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    optimizer: OptimizerOpt = Optimizer.sgd,
    dtype: Annotated[DType, typer.Option(help="Data type of the weights and float inputs.")] = DType.float32,
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision: the forward pass and loss under torch.autocast "
                                                    "(bfloat16 on cpu, float16 on cuda; emulated on meta); "
                                                    "parameters, gradients and optimizer state stay float32.")] = False,
    device: Annotated[Device, typer.Option(help="Device predicted for: its free memory is the default budget; on "
                                                "cuda the optimizer is the multi-tensor (foreach) one.")] = Device.cpu,
    budget: Annotated[Optional[str], typer.Option(
        metavar="SIZE", show_default=False,
        help="Memory to fit in, e.g. 24GiB, 80GB, 512MiB (default: the device's free memory); the largest batch "
             "that fits is reported.")] = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Predict memory before running: parameters, gradients, optimizer state, inputs, activations saved for
    backward, and the peak over the op sequence (simulated on the meta device); whether it fits a budget and the
    largest batch that does."""
    settings = MemorySettings(mode.value, optimizer.value, dtype.value, device.value, budget, resolution,
                              input_shape_, input_, amp)
    guard(partial(_run, settings, models, set_, batch_size, fmt.value, output))


@dataclass(frozen=True)
class MemorySettings:
    """What `cnnprof memory` predicts, for which device and budget."""

    mode: str
    optimizer: str
    dtype: str
    device: str
    budget: str | None  # a size as given; None: the device's free memory
    resolution: int | None
    input_shape: list[str] | None
    inputs: list[str] | None
    amp: bool = False  # mixed precision (torch.autocast, emulated)
    free_bytes: int | None = None  # the device's free memory, read once per run (the budget when none is given)


def _predict(settings: MemorySettings, explicit: Any, source: Any, job: tuple) -> Any:
    """The MemoryEstimate of one (model, batch size) job."""
    from cnnprof.inputs import with_batch_and_resolution
    from cnnprof.predict.memory import predict_memory

    model = source.build("meta")
    specs = input_specs(source, model, job[1], settings.resolution, explicit)
    if specs is None:
        raise CnnprofError(f"{source.label}: the declared input is nested; give --input-shape / --input")
    if explicit is not None and job[1] is not None:
        specs = with_batch_and_resolution(specs, job[1], None)
    return predict_memory(source, specs, mode=settings.mode, optimizer=settings.optimizer, dtype=settings.dtype,
                          device=settings.device, amp=settings.amp,
                          **({"budget": settings.budget} if settings.budget is not None else
                             {"budget": settings.free_bytes, "budget_source": "free memory"}))


def _report(results: list) -> Any:
    from cnnprof.report.memory import memory_report

    return memory_report(results)


def _run(settings: MemorySettings, models: list[str] | None, set_: list[str] | None, batch_size: str | None,
         fmt: str, output: str | None) -> int:
    from cnnprof.counting.footprint import check_settings
    from cnnprof.predict.memory import parse_bytes
    from cnnprof.timing.settings import check_device

    check_device(settings.device)  # the default budget is its free memory
    check_settings(settings.dtype, settings.mode, settings.optimizer, settings.amp)  # before any model is built
    if settings.budget is not None:
        parse_bytes(settings.budget)  # a bad size is refused before any model is built
    if settings.budget is None:  # read once, so every row of the run is checked against the same budget
        from cnnprof.counting.footprint import available_bytes

        settings = replace(settings, free_bytes=available_bytes(settings.device))
    explicit = explicit_inputs(settings.input_shape, settings.inputs, settings.resolution)
    sizes = parse_batch_sizes(batch_size) if batch_size is not None else [None]
    jobs = [(arg, b) for arg in model_args(models, set_) for b in sizes]
    name = job_name if len(sizes) == 1 else _batch_job_name
    run = ModelRun(partial(_predict, settings, explicit), _report, "Predicting memory of", name)
    return run.run(jobs, fmt, output)


def _batch_job_name(job: tuple) -> str:
    return f"{job[0].text} (batch {job[1]})"
