"""`cnnprof compare`."""
from __future__ import annotations

from typing import Any, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, Format, Convention, Scope, Device, FormatOpt, SetOpt, ConventionOpt, ScopeOpt, ResolutionOpt,
    InputShapeOpt, InputOpt, parse_overrides, parse_inputs, for_each_model, guard, flops_of)
from cnnprof.errors import CnnprofError


@app.command()
def compare(
    models: Annotated[list[str], typer.Argument(metavar="MODEL MODEL [MODEL]...",
                                                help="Models to compare; ratios are against the first.")],
    convention: ConventionOpt = Convention.macc,
    scope: ScopeOpt = Scope.conv,
    resolution: ResolutionOpt = None,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help="Batch size N of every input (FLOPs scale with it; also used by --bench; default: the model's "
                    "declared batch, usually 1).", show_default=False)] = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
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
        overrides, inputs = parse_overrides(set_), parse_inputs(input_shape_, input_)

        def work(spec: str) -> dict[str, Any]:
            fc, params_total, _ = flops_of(spec, overrides, scope.value, "torch", batch_size, resolution, inputs)
            row = {"model": fc.model, "params": params_total, "flops": fc.flops(convention.value), "macs": fc.macs,
                   "convention": convention.value, "scope": scope.value, "input_shape": list(fc.input_shape),
                   "macs_per_param": fc.macs / params_total if params_total else None, "method": fc.method}
            if bench:
                from cnnprof.analysis.runtime import benchmark

                r = benchmark(spec, inputs=list(fc.inputs), device=device.value, min_time=min_time, overrides=overrides)
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

    guard(body)
