"""`cnnprof bench`."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, err, Format, Device, DType, ModelsArg, FormatOpt, SetOpt, ResolutionOpt, InputShapeOpt, InputOpt,
    parse_overrides, parse_inputs, input_specs, model_specs, for_each_model, guard, parse_batch_sizes)
from cnnprof.errors import CnnprofError


@app.command("bench")
def bench_cmd(
    models: ModelsArg = None,
    device: Annotated[Device, typer.Option(help="Where to run: cpu, or cuda (exit 2 if CUDA is not available).")] = Device.cpu,
    batch_size: Annotated[str, typer.Option(metavar="B[,B...]", help="Batch sizes to measure, e.g. 1,8,32.")] = "1",
    resolution: ResolutionOpt = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    dtype: Annotated[DType, typer.Option(help="Data type of weights and float inputs (int/bool inputs keep theirs; "
                                               "they are filled with zeros, float inputs uniform in [0, 1)).")
                     ] = DType.float32,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="Use the NHWC (channels_last) memory format.")] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads (torch.set_num_threads); the count used is "
                                                          "recorded either way.", show_default=False)] = None,
    warmup: Annotated[float, typer.Option(min=0.0, help="Seconds of warm-up runs, excluded from the statistics.")] = 0.5,
    min_time: Annotated[float, typer.Option(min=0.0, help="Seconds of timed runs per (model, batch size).")] = 1.0,
    min_runs: Annotated[int, typer.Option(min=1, help="At least this many timed runs, however long they take.")] = 5,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model first; compile time is reported "
                                                             "separately (it is the cold call).")] = False,
    breakdown: Annotated[bool, typer.Option("--breakdown", help="Per layer type: share of MACs vs share of measured time, "
                                                                "and achieved GFLOP/s (op-level timing).")] = False,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Measure forward-pass latency and throughput (median, mean, min, p90, p99, IQR) on CPU or CUDA."""

    def body() -> int:
        from cnnprof.analysis.runtime import benchmark, check_device
        from cnnprof.inputs import with_batch_and_resolution
        from cnnprof.models.spec import resolve
        from cnnprof.report.render import emit
        from cnnprof.report.tables import bench_report

        check_device(device.value)  # before anything else runs
        if compile_ and breakdown:
            raise CnnprofError("--breakdown times the eager model op by op; run it without --compile")
        sizes, overrides = parse_batch_sizes(batch_size), parse_overrides(set_)
        explicit = parse_inputs(input_shape_, input_)
        jobs = [(spec, b) for spec in model_specs(models) for b in sizes]

        def work(job: tuple[str, int]):
            spec, b = job
            source = resolve(spec, overrides)
            model = source.build("meta") if explicit is None and source.config is None else None
            specs = input_specs(source, model, b, resolution, explicit)
            if explicit is not None:
                specs = with_batch_and_resolution(specs, b if batch_size != "1" else None, None)
            return benchmark(source, inputs=list(specs) if specs is not None else None, device=device.value, dtype=dtype.value, channels_last=channels_last,
                             threads=threads, warmup=warmup, min_time=min_time, min_runs=min_runs,
                             compile=compile_, breakdown=breakdown)

        results, code = for_each_model(jobs, work, "Benchmarking", name=lambda job: f"{job[0]} (batch {job[1]})")
        if results:
            emit(fmt.value, *bench_report(results, {"warmup": warmup, "min_time": min_time}))
        failed = [r for r in results if r.status != "ok"]
        for r in failed:
            err.print(f"error: {r.model} at batch {r.batch_size}: {r.error}", markup=False)
        return max(code, 1 if failed else 0)

    guard(body)
