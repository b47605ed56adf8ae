"""`cnnprof bench`."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, print_error, err, Format, Device, DType, ModelsArg, FormatOpt, OutputOpt, SetOpt, ResolutionOpt,
    InputShapeOpt, InputOpt, explicit_inputs, input_specs, model_args, for_each_model, guard, parse_batch_sizes,
    add_overrides, open_output, emit_report, soft_interrupts, interrupt_requested)
from cnnprof.cli.memory import Mode, ModeOpt, Optimizer, OptimizerOpt
from cnnprof.errors import CnnprofError

DeviceOpt = Annotated[Device, typer.Option(help="Where to run: cpu, or cuda (exit 2 if CUDA is not available).")]
DTypeOpt = Annotated[DType, typer.Option(help="Data type of weights and input (float16 on a CPU is usually much "
                                              "slower than float32).")]
ChannelsLastOpt = Annotated[bool, typer.Option("--channels-last", help="Use the NHWC (channels_last) memory format.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    min=1, help="CPU threads (torch.set_num_threads), at most the machine's cores; the count used is recorded "
                "either way.", show_default=False)]
WarmupOpt = Annotated[float, typer.Option(min=0.0, max=3600.0, help="Seconds of warm-up runs per model, excluded "
                                                                    "from the statistics (at most 3600).")]
MinTimeOpt = Annotated[float, typer.Option(min=0.0, max=3600.0, help="Seconds of timed runs per model and batch size, "
                                                                     "spread over the interleaved rounds (at most 3600).")]
MinRunsOpt = Annotated[int, typer.Option(min=1, max=1_000_000, help="At least this many timed runs per model, however "
                                                                    "long they take.")]


def warn_settings(device: str, dtype: str) -> None:
    if device == "cpu" and dtype == "float16":
        err.print("warning: float16 on a CPU is usually much slower than float32 (few CPUs compute in half "
                  "precision); bfloat16 or float32 measure what deployments use", markup=False)


@app.command("bench")
def bench_cmd(
    models: ModelsArg = None,
    device: DeviceOpt = Device.cpu,
    batch_size: Annotated[str, typer.Option(metavar="B[,B...]", help="Batch sizes to measure, e.g. 1,8,32; an OOM at "
                                                                    "one size does not stop the others.")] = "1",
    resolution: ResolutionOpt = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    dtype: Annotated[DType, typer.Option(help="Data type of weights and float inputs (int/bool inputs keep theirs: "
                                               "zeros; float inputs uniform in [0, 1)); float16 on a CPU is usually "
                                               "much slower than float32.")] = DType.float32,
    channels_last: ChannelsLastOpt = False,
    threads: ThreadsOpt = None,
    warmup: WarmupOpt = 0.5,
    min_time: MinTimeOpt = 1.0,
    min_runs: MinRunsOpt = 5,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model first; compile time is reported "
                                                             "separately (it is the cold call).")] = False,
    breakdown: Annotated[bool, typer.Option("--breakdown", help="Per layer type: share of MACs vs share of measured time, "
                                                                "and achieved GFLOP/s (op-level timing).")] = False,
    auto_batch: Annotated[bool, typer.Option("--auto-batch", help="Halve a batch size whose predicted peak (`cnnprof "
                                                                  "memory`) cannot fit in free memory until it does "
                                                                  "(the size used is recorded).")] = False,
    mode: ModeOpt = Mode.infer,
    optimizer: OptimizerOpt = Optimizer.sgd,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Measure forward-pass (or, with --mode train, training-step) latency and throughput (median, mean, min, p90,
    p99, IQR) on CPU or CUDA, and the peak memory of a call next to its prediction. Several models are timed
    interleaved in rounds, and their latency ratios to the first get an interval."""
    settings = BenchOptions(device.value, batch_size, resolution, input_shape_, input_, dtype.value, channels_last,
                            threads, warmup, min_time, min_runs, compile_, breakdown, auto_batch, mode.value,
                            optimizer.value)
    guard(partial(_run, settings, models, set_, fmt.value, output))


@dataclass(frozen=True)
class BenchOptions:
    """What `cnnprof bench` measures and how, as given on the command line."""

    device: str
    batch_size: str
    resolution: int | None
    input_shape: list[str] | None
    inputs: list[str] | None
    dtype: str
    channels_last: bool
    threads: int | None
    warmup: float
    min_time: float
    min_runs: int
    compile: bool
    breakdown: bool
    auto_batch: bool
    mode: str = "infer"
    optimizer: str = "sgd"

    def check(self) -> None:
        from cnnprof.timing.settings import check_device, validate_timing

        check_device(self.device)  # before anything else runs
        validate_timing(self.warmup, self.min_time, self.min_runs, self.threads, self.dtype)
        _use_threads(self.threads)
        if self.compile and self.breakdown:
            raise CnnprofError("--breakdown times the eager model op by op; run it without --compile")
        if self.mode == "train" and self.breakdown:
            raise CnnprofError("--breakdown times the ops of a forward pass; drop it or use --mode infer")
        warn_settings(self.device, self.dtype)


@dataclass
class BenchRun:
    """One `cnnprof bench`: every batch size is a job that times all models interleaved."""

    options: BenchOptions
    args: list[Any]
    sizes: list[int]
    explicit: Any  # InputSpecs of --input-shape / --input, or None
    profile: Any = None  # the device profile for predicted times next to --breakdown
    overrides: dict[str, dict] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)  # row label -> resolved model
    inputs: dict[str, Any] = field(default_factory=dict)  # row label -> its InputSpecs (None: nested, as declared)
    bad: int = 0  # 2 when a model could not be resolved

    def _resolved(self, first: bool) -> list[Any]:
        from cnnprof.cli.models_arg import resolve_arg

        found = []
        for arg in self.args:
            try:
                source = resolve_arg(arg)
            except CnnprofError as exc:
                if first:
                    print_error(exc)
                self.bad = 2
                continue
            self.overrides[source.label] = arg.overrides()
            self.sources[source.label] = source
            found.append(source)
        return found

    def _inputs(self, source: Any, b: int) -> Any:
        from cnnprof.inputs import with_batch_and_resolution

        model = source.build("meta") if self.explicit is None and source.config is None else None
        specs = input_specs(source, model, b, self.options.resolution, self.explicit)
        if self.explicit is not None:  # explicit shapes carry their batch unless --batch-size says otherwise
            specs = with_batch_and_resolution(specs, b if self.options.batch_size != "1" else None, None)
        return specs

    def batch(self, b: int) -> tuple[list, list]:
        """(BenchResults, ratio statistics) of every model at batch size `b`, timed interleaved."""
        from cnnprof.timing.interleave import interleaved_benchmark

        o = self.options
        sources = self._resolved(first=b == self.sizes[0])
        inputs = [self._inputs(s, b) for s in sources]
        self.inputs.update((s.label, specs) for s, specs in zip(sources, inputs))
        with soft_interrupts():
            return interleaved_benchmark(
                sources, inputs, o.device, dtype=o.dtype, channels_last=o.channels_last, threads=o.threads,
                warmup=o.warmup, min_time=o.min_time, min_runs=o.min_runs, compile=o.compile,
                auto_batch=o.auto_batch, breakdown=o.breakdown, stop=interrupt_requested, mode=o.mode,
                optimizer=o.optimizer)

    def report(self, groups: list[tuple[list, list]]) -> Any:
        from cnnprof.report.tables import bench_report

        results = [r for rs, _ in groups for r in rs]
        ratios = [q for _, qs in groups for q in qs]
        preds = _predictions(results, self, self.profile, self.options.dtype) if self.profile else {}
        settings = {"warmup": self.options.warmup, "min_time": self.options.min_time}
        report = bench_report(results, settings, ratios, _by_type(preds) if self.options.breakdown else None,
                              peaks=_peaks(self.profile, self.options.dtype, preds))
        return add_overrides(report, self.overrides)

    def stream(self, writer: Any, group: tuple[list, list]) -> None:
        writer.add(*self.report([group])[1:])


def _run(options: BenchOptions, models: list[str] | None, set_: list[str] | None, fmt: str,
         output: str | None) -> int:
    options.check()
    sizes, args, writer = parse_batch_sizes(options.batch_size), model_args(models, set_), open_output(output)
    run = BenchRun(options, args, sizes, explicit_inputs(options.input_shape, options.inputs, options.resolution),
                   _profile(options.device, options.dtype, options.breakdown))
    groups, code = for_each_model(sizes, run.batch, "Benchmarking", name=_batch_name,
                                  on_result=partial(run.stream, writer) if writer else None)
    emit_report(fmt, run.report(groups), code, "rounds")
    failed = [r for rs, _ in groups for r in rs if r.status not in ("ok", "interrupted")]
    for r in failed:
        print_error(f"{r.model} at batch {r.batch_size}: {r.error}")
    return max(code, run.bad, 1 if failed else 0)


def _batch_name(b: int) -> str:
    return f"batch {b}"


def _use_threads(threads: int | None) -> None:
    """--threads holds for the whole command, as it did before the library restored its callers' count: the
    cached profile a breakdown is shown with is the one of that thread count."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _profile(device: str, dtype: str = "float32", breakdown: bool = False):
    """This device's cached profile at this thread count (with its cached layer table), or None; with a breakdown
    a note says how to get one (a benchmark never waits for a calibration)."""
    from cnnprof.predict.device import cached_profile
    from cnnprof.predict.lut import attach

    from cnnprof.cli.device import warn

    profile = cached_profile(device, warn, dtype)
    if profile is None:
        if breakdown:
            err.print(f"note: run `cnnprof device --device {device}` once to see predicted times and shares of the "
                      f"peak next to the breakdown")
        return None
    return attach(profile, warn=warn)


def _predictions(results: list, run: BenchRun, profile: Any, dtype: str) -> dict[tuple[str, int], Any]:
    """(model, batch) -> LatencyPrediction on `profile`, on the inputs the model was timed on (every input, with
    its dtype, at the batch size of the result)."""
    from cnnprof.inputs import with_batch_and_resolution
    from cnnprof.predict.latency import predict_latency

    out = {}
    for r in results:
        if r.status != "ok" or r.model not in run.sources:
            continue
        specs = run.inputs.get(r.model)
        if specs and specs[0].shape and specs[0].shape[0] != r.batch_size:  # --auto-batch halved it
            specs = with_batch_and_resolution(specs, r.batch_size, None)
        specs = list(specs) if specs is not None else None
        out[(r.model, r.batch_size)] = predict_latency(run.sources[r.model], None, profile, dtype, inputs=specs)
    return out


def _by_type(preds: dict[tuple[str, int], Any]) -> dict[tuple[str, int], dict[str, float]]:
    """(model, batch) -> predicted seconds per layer type (memory copies under 'other', as the breakdown has them)."""
    out = {}
    for key, p in preds.items():
        types: dict[str, float] = {}
        for row in p.by_type():
            name = "other" if row["name"] == "memory copy" else row["name"]
            types[name] = types.get(name, 0.0) + row["predicted_s"]
        out[key] = types
    return out


def _peaks(profile: Any, dtype: str, preds: dict[tuple[str, int], Any]) -> Any:
    """What bench compares achieved rates with: the profile's peak FLOP/s at `dtype` and bandwidth, and per (model,
    batch) the counted FLOPs (nvidia, every op) and bytes, in total and per layer type; None without a profile."""
    if profile is None:
        return None
    traffic = {}
    for key, p in preds.items():
        types: dict[str, tuple[int, int]] = {}
        for row in p.memory.by_type():
            name = "other" if row.name == "memory copy" else row.name
            f, b = types.get(name, (0, 0))
            types[name] = (f + row.flops, b + row.bytes)
        total = p.memory.total()
        traffic[key] = {"flops": total.flops, "bytes": total.bytes, "types": types}
    return {"peak_flops": profile.peak(dtype), "bandwidth": profile.bandwidth, "device_name": profile.name,
            "threads": profile.threads, "traffic": traffic}
