"""`cnnprof compare`."""
from __future__ import annotations

from typing import Any, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.bench import warn_settings
from cnnprof.cli.common import (
    app, print_error, Format, Convention, Scope, Device, DType, FormatOpt, OutputOpt, SetOpt,
    ConventionOpt, ScopeOpt, ResolutionOpt, InputShapeOpt, InputOpt, parse_inputs, single_batch_size,
    model_args, for_each_model, guard, flops_of, add_overrides, open_output, emit_report, soft_interrupts,
    interrupt_requested, INTERRUPTED)
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
    predict: Annotated[bool, typer.Option("--predict", help="Add predicted latency (per-op-kind calibrated, see "
                                                            "`cnnprof roofline`) without running the models.")] = False,
    device_spec: DeviceSpecOpt = None,
    device: Annotated[Optional[Device], typer.Option(help="With --bench or --predict: the device (default cpu).",
                                                     show_default=False)] = None,
    dtype: Annotated[Optional[DType], typer.Option(help=_BENCH + "data type of weights and input (default float32).",
                                                   show_default=False)] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last", help=_BENCH + "NHWC memory format.",
                                                          show_default=False)] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help=_BENCH + "CPU threads, at most the machine's cores.",
                                                   show_default=False)] = None,
    warmup: Annotated[Optional[float], typer.Option(min=0.0, max=3600.0, show_default=False,
                                                    help=_BENCH + "seconds of warm-up per model (default 0.5).")] = None,
    min_time: Annotated[Optional[float], typer.Option(min=0.0, max=3600.0, show_default=False,
                                                      help=_BENCH + "seconds of timed runs per model (default 1).")] = None,
    min_runs: Annotated[Optional[int], typer.Option(min=1, max=1_000_000, show_default=False,
                                                    help=_BENCH + "at least this many timed runs per model (default 5).")
                        ] = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    set_: SetOpt = None,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Side-by-side params, FLOPs and MACs per parameter, with each model's ratio to the first."""
    overrides: dict[str, dict] = {}  # row label -> effective overrides

    def body() -> int:
        from cnnprof.cli.models_arg import resolve_arg

        if len(models) < 2:
            raise CnnprofError("compare needs at least two models, e.g. cnnprof compare resnet50 resnext50")
        timing = {"--device": None if predict else device, "--dtype": dtype, "--channels-last": channels_last, "--threads": threads,
                  "--warmup": warmup, "--min-time": min_time, "--min-runs": min_runs}
        given = [k for k, v in timing.items() if v is not None]
        if given and not bench:
            raise CnnprofError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only with --bench; "
                               f"add --bench or drop {'it' if len(given) == 1 else 'them'}")
        b = single_batch_size(batch_size, "compare") if batch_size is not None else None
        bench_opts = dict(dtype=(dtype or DType.float32).value, channels_last=bool(channels_last), threads=threads,
                          warmup=0.5 if warmup is None else warmup, min_time=1.0 if min_time is None else min_time,
                          min_runs=min_runs or 5)
        dev = (device or Device.cpu).value
        if bench:
            from cnnprof.timing.runtime import check_device, validate_timing

            check_device(dev)
            validate_timing(bench_opts["warmup"], bench_opts["min_time"], bench_opts["min_runs"], threads,
                            bench_opts["dtype"])
            warn_settings(dev, bench_opts["dtype"])
        args, writer = model_args(models, set_), open_output(output)
        inputs = parse_inputs(input_shape_, input_)
        sources: list[Any] = []
        profile = requested_profile(predict, dev, device_spec)

        def work(arg) -> dict[str, Any]:
            source = resolve_arg(arg)
            overrides[source.label] = arg.overrides()
            fc, params_total, _ = flops_of(source, {}, scope.value, "torch", b, resolution, inputs)
            sources.append((source, fc.inputs or fc.input_shape))
            row = {"model": fc.model, "params": params_total, "flops": fc.flops(convention.value), "macs": fc.macs,
                   "acts": fc.acts, "convention": convention.value, "scope": scope.value,
                   "input_shape": list(fc.input_shape),
                   "macs_per_param": fc.macs / params_total if params_total else None,
                   "uncounted_ops": dict(fc.uncounted), "method": fc.method}
            if profile is not None:
                from cnnprof.predict.latency import predict_latency

                p = predict_latency(source, fc.input_shape, profile)
                row.update(predicted_ms=1e3 * p.best_s(), roofline_ms=1e3 * p.roofline_s,
                           prediction="calibrated" if p.calibrated else "roofline", device_name=p.device_name,
                           profile=p.source)
            return row

        rows_so_far: list[dict[str, Any]] = []

        def keep(row):
            rows_so_far.append(row)
            if writer and not bench:  # with --bench a row is complete only after the timing rounds
                _, json_rows, csv_rows = report(list(rows_so_far))
                writer.add(json_rows[-1:], csv_rows[-1:])

        rows, code = for_each_model(args, work, "Counting", name=lambda a: a.text, on_result=keep)
        if bench and rows and code != INTERRUPTED:
            code = max(code, _bench_rows(rows, sources, dev, bench_opts))
        final = report(rows)
        if writer and bench:
            writer.add(*final[1:])
        emit_report(fmt.value, final, code, "models")
        return code

    def report(rows):
        from cnnprof.report.tables import compare_report

        _ratios(rows)
        return add_overrides(compare_report(rows, convention.value, scope.value, bench, predict), overrides)

    guard(body)


def _ratios(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    ref = rows[0]
    for row in rows:
        for key in ("params", "flops", "macs"):
            row[f"{key}_ratio"] = row[key] / ref[key] if ref[key] else None
        if "predicted_ms" in row:
            row["predicted_ratio"] = row["predicted_ms"] / ref["predicted_ms"] if ref.get("predicted_ms") else None


def _bench_rows(rows: list[dict[str, Any]], sources: list[Any], device: str, opts: dict[str, Any]) -> int:
    """Time every model interleaved in rounds; add latency, ratio interval, status and noisy flag to its row."""
    from cnnprof.timing.interleave import interleaved_benchmark

    with soft_interrupts():
        results, ratios = interleaved_benchmark([s for s, _ in sources], [shape for _, shape in sources], device,
                                                stop=interrupt_requested, **opts)
    code = 0
    for row, r, q in zip(rows, results, ratios):
        row.update(device=device, latency_ms=r.median_ms, throughput=r.throughput, bench_status=r.status,
                   bench_error=r.error, noisy=r.noisy, rounds=r.rounds,
                   latency_ratio_interval=None if q is None else {"low": q.low, "high": q.high,
                                                                 "measurable": q.measurable})
        row["latency_ratio"] = (q.median if q is not None else 1.0 if r is results[0] and r.median_ms else None)
        row["throughput_ratio"] = (row["throughput"] / rows[0]["throughput"]
                                   if row["throughput"] and rows[0].get("throughput") else None)
        if r.status != "ok":
            print_error(f"{r.model}: {r.error}")
            code = INTERRUPTED if r.status == "interrupted" else max(code, 1)
    return code
