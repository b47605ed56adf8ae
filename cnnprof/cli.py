"""cnnprof command line: thin Typer commands that parse, call a plain function and render.

torch is imported inside the commands that need it, so `cnnprof --help` and `cnnprof list` start fast.
Exit codes: 0 success; 1 a measurement failed (e.g. CUDA out of memory) or an internal error;
2 bad input (unknown model, invalid config or option), reported in one line on stderr.
"""
from __future__ import annotations

import os
import re
from dataclasses import replace
from enum import Enum
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from typing_extensions import Annotated

from cnnprof.errors import CnnprofError, first_line

app = typer.Typer(
    name="cnnprof",
    help="Profile CNN complexity: parameters, FLOPs (under an explicit convention) and measured runtime.\n\n"
         "MODEL is a zoo name or alias (see `cnnprof list`), a path to a YAML config, or "
         "package.module:callable / path/to/file.py:callable returning a torch.nn.Module.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


class Convention(str, Enum):
    macc = "macc"
    nvidia = "nvidia"


class Scope(str, Enum):
    conv = "conv"
    all = "all"


class Backend(str, Enum):
    torch = "torch"
    fvcore = "fvcore"


class ParamsBy(str, Enum):
    stage = "stage"
    type = "type"
    layer = "layer"


class FlopsBy(str, Enum):
    layer = "layer"
    op = "op"
    stage = "stage"
    type = "type"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


ModelsArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="MODEL", help="Models to analyse; none means the whole zoo.", show_default=False)]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format; json/csv/markdown write only data to stdout.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override a config value (repeatable): a param such as width_mult=0.75 or stride_in_1x1=true, or a "
         "dotted path such as stages.2.depth=9. For module:callable, passed to the callable as keywords.",
    show_default=False)]
ConventionOpt = Annotated[Convention, typer.Option(
    help="FLOP convention: macc counts 1 multiply-accumulate as 1 FLOP (most papers); nvidia counts it as 2.")]
ScopeOpt = Annotated[Scope, typer.Option(
    help="conv: convolution and linear layers only (papers, torchvision); all: also norm, activations, "
         "pooling and element-wise ops, each with a documented formula.")]
ResolutionOpt = Annotated[Optional[int], typer.Option(
    min=1, help="Input height and width (default: the config's resolution, usually 224).", show_default=False)]
InputShapeOpt = Annotated[Optional[str], typer.Option(
    "--input-shape", metavar="N,C,H,W", show_default=False,
    help="Exact input shape (any rank), e.g. 1,64,56,56 for a single block; overrides --batch-size and --resolution.")]


def _overrides(items: list[str] | None) -> dict[str, Any]:
    from cnnprof.config import parse_override

    return dict(parse_override(item) for item in items or [])


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(d) for d in re.split(r"[,x×]", text.strip()))
    except ValueError:
        raise CnnprofError(f"--input-shape {text!r}: expected integers like 1,3,224,224") from None
    if not dims or any(d <= 0 for d in dims):
        raise CnnprofError(f"--input-shape {text!r}: every dimension must be a positive integer")
    return dims


def input_shape(source: Any, batch_size: int | None, resolution: int | None, explicit: tuple[int, ...] | None):
    """The input a command uses: explicit shape, else the model's default with batch/resolution applied."""
    if explicit is not None:
        return explicit
    shape = list(source.default_input_shape)
    if batch_size is not None:
        shape[0] = batch_size
    if resolution is not None and len(shape) >= 3:
        shape[2:] = [resolution] * (len(shape) - 2)
    return tuple(shape)


def _specs(models: list[str] | None) -> list[str]:
    if models:
        return models
    from cnnprof.config import zoo_names

    return zoo_names()


def for_each_model(specs: list[Any], work: Callable[[Any], Any], what: str,
                   name: Callable[[Any], str] = str) -> tuple[list[Any], int]:
    """Run `work` per model (or job); a failing one is reported on stderr and the others still run.
    Returns (results, exit code so far)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results, code = [], 0
    show = len(specs) > 1 and err.is_terminal
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not show) as progress:
        task = progress.add_task(what, total=len(specs))
        for spec in specs:
            progress.update(task, description=f"{what} {name(spec)}")
            try:
                results.append(work(spec))
            except CnnprofError as exc:
                err.print(f"error: {exc}", markup=False)
                code = max(code, 2)
            except Exception as exc:  # noqa: BLE001 - one broken model must not lose the others
                if os.environ.get("CNNPROF_DEBUG"):
                    raise
                err.print(f"error: {name(spec)}: internal error: {type(exc).__name__}: {first_line(exc)} "
                          f"(set CNNPROF_DEBUG=1 for the traceback)", markup=False)
                code = max(code, 1)
            progress.advance(task)
    return results, code


def _guard(fn: Callable[[], int]) -> None:
    """Run a command body: bad input -> one line on stderr and exit 2; the body's code otherwise."""
    try:
        code = fn()
    except CnnprofError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2)
    raise typer.Exit(code)


@app.command("list")
def list_cmd(fmt: FormatOpt = Format.table) -> None:
    """List the zoo: name, aliases, family, paper and a one-line description."""
    from cnnprof.config import zoo_info
    from cnnprof.report.render import emit
    from cnnprof.report.tables import zoo_report

    def body() -> int:
        emit(fmt.value, *zoo_report(zoo_info()))
        return 0

    _guard(body)


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
) -> None:
    """Count parameters (total and trainable) of models, built on the meta device (no memory used)."""

    def body() -> int:
        from cnnprof.analysis.params import count_params
        from cnnprof.models.spec import resolve
        from cnnprof.report.render import emit
        from cnnprof.report.tables import params_report

        overrides = _overrides(set_)

        def work(spec: str):
            source = resolve(spec, overrides)
            return source.label, count_params(source.build("meta"))

        results, code = for_each_model(_specs(models), work, "Counting parameters of")
        if results:
            emit(fmt.value, *params_report(results, by.value if by else None, depth))
        return code

    _guard(body)


def _flops_of(spec: str, overrides: dict, scope: str, backend: str, batch_size: int | None,
              resolution: int | None, shape: tuple[int, ...] | None, per_module: bool = False):
    """(FlopCount, params, params per module or None) for one model spec."""
    from cnnprof.analysis.flops import count_flops
    from cnnprof.analysis.params import count_params
    from cnnprof.models.spec import resolve

    source = resolve(spec, overrides)
    model = source.build("meta")
    pc = count_params(model)
    shape = input_shape(source, batch_size, resolution, shape)
    # The torch backend counts the meta model just built; fvcore builds its own on the CPU.
    fc = count_flops(source if backend == "fvcore" else replace(source, module=model), shape, scope=scope,
                     backend=backend)
    return fc, pc.total, dict(pc.by_module) if per_module else None


@app.command()
def flops(
    models: ModelsArg = None,
    convention: ConventionOpt = Convention.macc,
    scope: ScopeOpt = Scope.conv,
    resolution: ResolutionOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size N of the input.")] = 1,
    input_shape_: InputShapeOpt = None,
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

        overrides, shape = _overrides(set_), _shape(input_shape_)
        per_module = by is FlopsBy.layer
        results, code = for_each_model(
            _specs(models),
            lambda spec: _flops_of(spec, overrides, scope.value, backend.value, batch_size, resolution, shape,
                                   per_module),
            "Counting FLOPs of")
        if results:
            emit(fmt.value, *flops_report(results, convention.value, by.value if by else None, depth))
        return code

    _guard(body)


@app.command()
def compare(
    models: Annotated[list[str], typer.Argument(metavar="MODEL MODEL [MODEL]...",
                                                help="Models to compare; ratios are against the first.")],
    convention: ConventionOpt = Convention.macc,
    scope: ScopeOpt = Scope.conv,
    resolution: ResolutionOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size N (FLOPs scale with it; also used by --bench).")] = 1,
    bench: Annotated[bool, typer.Option("--bench", help="Also measure latency and throughput (see `cnnprof bench`).")] = False,
    device: Annotated[Device, typer.Option(help="Device for --bench.")] = Device.cpu,
    min_time: Annotated[float, typer.Option(min=0.0, help="With --bench: seconds of timed runs per model.")] = 1.0,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Side-by-side params, FLOPs and MACs per parameter, with each model's ratio to the first."""

    def body() -> int:
        from cnnprof.report.render import emit
        from cnnprof.report.tables import compare_report

        if len(models) < 2:
            raise CnnprofError("compare needs at least two models, e.g. cnnprof compare resnet50 resnext50")
        if bench:
            from cnnprof.analysis.runtime import check_device

            check_device(device.value)
        overrides = _overrides(set_)

        def work(spec: str) -> dict[str, Any]:
            fc, params_total, _ = _flops_of(spec, overrides, scope.value, "torch", batch_size, resolution, None)
            row = {"model": fc.model, "params": params_total, "flops": fc.flops(convention.value), "macs": fc.macs,
                   "convention": convention.value, "scope": scope.value, "input_shape": list(fc.input_shape),
                   "macs_per_param": fc.macs / params_total if params_total else None}
            if bench:
                from cnnprof.analysis.runtime import benchmark

                r = benchmark(spec, fc.input_shape, device=device.value, min_time=min_time, overrides=overrides)
                row.update(device=device.value, latency_ms=r.median_ms, throughput=r.throughput, bench_status=r.status)
            return row

        rows, code = for_each_model(models, work, "Profiling")
        if rows:
            ref = rows[0]
            for row in rows:
                row["params_ratio"] = row["params"] / ref["params"] if ref["params"] else None
                row["flops_ratio"] = row["flops"] / ref["flops"] if ref["flops"] else None
                row["macs_ratio"] = row["macs"] / ref["macs"] if ref["macs"] else None
                if bench:
                    ok = row.get("latency_ms") and ref.get("latency_ms")
                    row["latency_ratio"] = row["latency_ms"] / ref["latency_ms"] if ok else None
                    row["throughput_ratio"] = row["throughput"] / ref["throughput"] if ok else None
                    code = max(code, 0 if row.get("bench_status") == "ok" else 1)
            emit(fmt.value, *compare_report(rows, convention.value, scope.value, bench))
        return code

    _guard(body)


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise CnnprofError(f"--batch-size {text!r}: expected a comma-separated list of integers like 1,8,32") from None
    if not sizes or any(b < 1 for b in sizes):
        raise CnnprofError(f"--batch-size {text!r}: batch sizes must be positive integers")
    return sizes


@app.command("bench")
def bench_cmd(
    models: ModelsArg = None,
    device: Annotated[Device, typer.Option(help="Where to run: cpu, or cuda (exit 2 if CUDA is not available).")] = Device.cpu,
    batch_size: Annotated[str, typer.Option(metavar="B[,B...]", help="Batch sizes to measure, e.g. 1,8,32.")] = "1",
    resolution: ResolutionOpt = None,
    dtype: Annotated[DType, typer.Option(help="Data type of weights and input.")] = DType.float32,
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
        from cnnprof.models.spec import resolve
        from cnnprof.report.render import emit
        from cnnprof.report.tables import bench_report

        check_device(device.value)  # before anything else runs
        if compile_ and breakdown:
            raise CnnprofError("--breakdown times the eager model op by op; run it without --compile")
        sizes, overrides = _batch_sizes(batch_size), _overrides(set_)
        jobs = [(spec, b) for spec in _specs(models) for b in sizes]

        def work(job: tuple[str, int]):
            spec, b = job
            source = resolve(spec, overrides)
            shape = input_shape(source, b, resolution, None)
            return benchmark(source, shape, device=device.value, dtype=dtype.value, channels_last=channels_last,
                             threads=threads, warmup=warmup, min_time=min_time, min_runs=min_runs,
                             compile=compile_, breakdown=breakdown)

        results, code = for_each_model(jobs, work, "Benchmarking", name=lambda job: f"{job[0]} (batch {job[1]})")
        if results:
            emit(fmt.value, *bench_report(results, {"warmup": warmup, "min_time": min_time}))
        failed = [r for r in results if r.status != "ok"]
        for r in failed:
            err.print(f"error: {r.model} at batch {r.batch_size}: {r.error}", markup=False)
        return max(code, 1 if failed else 0)

    _guard(body)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
