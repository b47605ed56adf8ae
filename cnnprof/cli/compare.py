"""`cnnprof compare`."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.bench import warn_settings
from cnnprof.cli.common import (
    app, print_error, Format, Convention, Scope, Device, DType, FormatOpt, OutputOpt, SetOpt,
    ConventionOpt, ScopeOpt, ResolutionOpt, InputShapeOpt, InputOpt, explicit_inputs, single_batch_size,
    model_args, for_each_model, guard, open_output, emit_report, soft_interrupts, interrupt_requested, INTERRUPTED)
from cnnprof.cli.flops import FrozenOpt, Mode, ModeOpt
from cnnprof.cli.runs import ModelRun, job_name
from cnnprof.cli.device import DeviceSpecOpt, requested_profile
from cnnprof.errors import CnnprofError

_BENCH = "With --bench: "


@app.command()
def compare(
    models: Annotated[list[str], typer.Argument(
        metavar="MODEL MODEL [MODEL]...", show_default=False,
        help="Models to compare; ratios are against the first. MODEL@key=value,label=NAME sets options per model.")],
    convention: ConventionOpt = Convention.macc,
    scope: ScopeOpt = Scope.conv,
    resolution: ResolutionOpt = None,
    batch_size: Annotated[Optional[str], typer.Option(
        metavar="N", show_default=False,
        help="Batch size N of every input (default: the model's declared batch, usually 1). One size: compare models at one configuration; sweep batch "
             "sizes with `cnnprof flops` or `cnnprof bench`.")] = None,
    bench: Annotated[bool, typer.Option("--bench", help="Also measure latency and throughput, interleaved in rounds "
                                                        "(see `cnnprof bench`).")] = False,
    predict: Annotated[bool, typer.Option("--predict", help="Add predicted latency (per-op-type calibrated, see "
                                                            "`cnnprof roofline`) without running the models.")] = False,
    device_spec: DeviceSpecOpt = None,
    device: Annotated[Optional[Device], typer.Option(help="With --bench or --predict: the device (default cpu).",
                                                     show_default=False)] = None,
    dtype: Annotated[Optional[DType], typer.Option(help=_BENCH + "data type of weights and input (default float32).",
                                                   show_default=False)] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last", help=_BENCH + "NHWC memory format.",
                                                          show_default=False)] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="With --bench or --predict: CPU threads, at most the "
                                                               "machine's cores (--predict uses the device profile "
                                                               "of that count).", show_default=False)] = None,
    warmup: Annotated[Optional[float], typer.Option(min=0.0, max=3600.0, show_default=False,
                                                    help=_BENCH + "seconds of warm-up per model (default 0.5).")] = None,
    min_time: Annotated[Optional[float], typer.Option(min=0.0, max=3600.0, show_default=False,
                                                      help=_BENCH + "seconds of timed runs per model (default 1).")] = None,
    min_runs: Annotated[Optional[int], typer.Option(min=1, max=1_000_000, show_default=False,
                                                    help=_BENCH + "at least this many timed runs per model (default 5).")
                        ] = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    mode: ModeOpt = Mode.infer,
    frozen: FrozenOpt = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Side-by-side params, FLOPs and MACs per parameter, with each model's ratio to the first (with --mode train,
    the FLOPs of a training step)."""
    timing = {"--device": None if predict else device, "--dtype": dtype, "--channels-last": channels_last,
              "--threads": None if predict and not bench else threads, "--warmup": warmup, "--min-time": min_time,
              "--min-runs": min_runs}
    settings = CompareSettings(
        convention.value, scope.value, resolution, batch_size, input_shape_, input_, predict, device_spec,
        (device or Device.cpu).value, bench, {k: v for k, v in timing.items() if v is not None}, mode.value,
        tuple(frozen or ()), threads=threads if predict else None)
    guard(partial(_run, settings, models, set_, fmt.value, output))


@dataclass(frozen=True)
class CompareSettings:
    """What `cnnprof compare` counts, predicts and measures, as given on the command line."""

    convention: str
    scope: str
    resolution: int | None
    batch_size: str | None
    input_shape: list[str] | None
    inputs: list[str] | None
    predict: bool
    device_spec: str | None
    device: str
    bench: bool
    timing: dict[str, Any]  # the timing options given ("--dtype": value, ...): they need --bench
    mode: str = "infer"
    frozen: tuple[str, ...] = ()
    threads: int | None = None  # with --predict: the thread count whose device profile is used

    def check_mode(self) -> None:
        """--mode train counts a training step: --bench and --predict are of a forward pass."""
        from cnnprof.counting.flops import check_mode

        check_mode(self.mode, "torch", self.frozen)
        latency = [flag for flag, on in (("--bench", self.bench), ("--predict", self.predict)) if on]
        if self.mode == "train" and latency:
            flags = " and ".join(latency)
            raise CnnprofError(f"{flags} {'are' if len(latency) > 1 else 'is'} of a forward pass; with --mode train "
                               f"compare counts FLOPs only (drop {flags})")

    def bench_settings(self) -> Any:
        """cnnprof.profiling.compare.BenchSettings, checked; None without --bench."""
        from cnnprof.profiling.compare import BenchSettings

        given = list(self.timing)
        if given and not self.bench:
            raise CnnprofError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only with --bench; "
                               f"add --bench or drop {'it' if len(given) == 1 else 'them'}")
        if not self.bench:
            return None
        from cnnprof.timing.settings import check_device, validate_timing

        t = self.timing
        b = BenchSettings(self.device, (t.get("--dtype") or DType.float32).value, bool(t.get("--channels-last")),
                          t.get("--threads"), t.get("--warmup", 0.5), t.get("--min-time", 1.0), t.get("--min-runs", 5))
        check_device(b.device)
        validate_timing(b.warmup, b.min_time, b.min_runs, b.threads, b.dtype)
        warn_settings(b.device, b.dtype)
        return b


def _profile(settings: CompareSettings, batch: int | None, inputs: Any, device_profile: Any, source: Any,
             arg: Any) -> Any:
    """The Profile of one model (cnnprof.profiling.profile)."""
    from cnnprof.profiling.profile import profile

    return profile(source, inputs, batch_size=batch, resolution=settings.resolution, scope=settings.scope,
                   convention=settings.convention, device_profile=device_profile, mode=settings.mode,
                   frozen=settings.frozen)


def _comparison(settings: CompareSettings, run: ModelRun, profiles: list[Any]) -> Any:
    from cnnprof.profiling.compare import Comparison

    return Comparison(tuple(profiles), settings.convention, settings.scope, overrides=run.overrides)


def _stream(settings: CompareSettings, run: ModelRun, writer: Any, done: list[Any], profile: Any) -> None:
    """--output without --bench: each model's row as soon as it is counted (ratios to the first so far)."""
    done.append(profile)
    _, json_rows, csv_rows = _comparison(settings, run, done).report()
    writer.add(json_rows[-1:], csv_rows[-1:])


def _run(settings: CompareSettings, models: list[str], set_: list[str] | None, fmt: str, output: str | None) -> int:
    if len(models) < 2:
        raise CnnprofError("compare needs at least two models, e.g. cnnprof compare resnet50 resnext50")
    settings.check_mode()
    batch = single_batch_size(settings.batch_size, "compare") if settings.batch_size is not None else None
    bench = settings.bench_settings()
    args, writer = model_args(models, set_), open_output(output)
    inputs = explicit_inputs(settings.input_shape, settings.inputs, settings.resolution, settings.batch_size)
    device_profile = requested_profile(settings.predict, settings.device, settings.device_spec, settings.threads,
                                       measure_layers=True)
    run = ModelRun(partial(_profile, settings, batch, inputs, device_profile), None, "Counting")
    stream = partial(_stream, settings, run, writer, []) if writer and not bench else None
    profiles, code = for_each_model(args, run.one, run.what, name=job_name, on_result=stream)
    comparison = _comparison(settings, run, profiles)
    if bench and profiles and code != INTERRUPTED:
        with soft_interrupts():
            comparison = comparison.timed(bench, stop=interrupt_requested)
        code = max(code, _failures(comparison))
    final = comparison.report()
    if writer and bench:  # with --bench a row is complete only after the timing rounds
        writer.add(*final[1:])
    emit_report(fmt, final, code, "models")
    return code


def _failures(comparison: Any) -> int:
    """Report every model whose timing failed; the exit code they add (130 if interrupted, else 1)."""
    code = 0
    for model, status, error in comparison.failures():
        print_error(f"{model}: {error}")
        code = INTERRUPTED if status == "interrupted" else max(code, 1)
    return code
