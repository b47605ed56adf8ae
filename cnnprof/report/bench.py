"""`cnnprof bench`: latency statistics, throughput, interleaved latency ratios and per-layer-type breakdowns."""
from __future__ import annotations

from typing import Any

from cnnprof.counting.conventions import to_flops
from cnnprof.report.render import Column, Report, Table, fixed, integer, percent, si

Predicted = dict[tuple[str, int], dict[str, float]]  # (model, batch size) -> predicted seconds per layer type
SHORT_HEADERS = {"Median (ms)": "Med ms", "Mean (ms)": "Mean", "Min (ms)": "Min", "P90 (ms)": "P90",
                 "P99 (ms)": "P99", "IQR (ms)": "IQR"}


def _bar(share: float | None, width: int = 10) -> str:
    if share is None:
        return "-"
    filled = round(share * width)
    return "█" * filled + "·" * (width - filled) + f" {100 * share:5.1f}%"


def bench_json(r: Any) -> dict[str, Any]:
    """One benchmark result as a JSON object (raw numbers, seconds converted to ms)."""
    ms = lambda s: None if s is None else 1e3 * s  # noqa: E731
    row = {
        "model": r.model, "device": r.device, "batch_size": r.batch_size, "dtype": r.dtype,
        "input_shape": list(r.input_shape), "status": r.status, "error": r.error,
        "latency_ms": r.latency_ms(), "throughput": r.throughput, "runs": r.runs, "noisy": r.noisy,
        "cold_ms": ms(r.cold_s), "compile_ms": ms(r.compile_s), "warmup_runs": r.warmup_runs, "macs": r.macs,
        "gflop_per_s": {"macc": r.gflops("macc"), "nvidia": r.gflops("nvidia")},
        "requested_batch_size": r.requested_batch_size, "rounds": r.rounds, "estimated_bytes": r.needed_bytes,
        "peak_memory_bytes": {"allocated": r.peak_allocated, "reserved": r.peak_reserved},
        "mode": r.mode, "optimizer": r.optimizer,
        "peak_bytes": {"measured": r.measured_peak, "predicted": r.predicted_peak},
        "env": {k: getattr(r.env, k) for k in r.env.__dataclass_fields__},
    }
    if r.breakdown:
        row["breakdown"] = breakdown_rows(r)
    return row


def breakdown_rows(r: Any, predicted: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Per layer type: measured time and shares; with `predicted` (type -> seconds) the predicted time too."""
    total_t = sum(t.time_s for t in r.breakdown) or 1.0
    total_m = sum(t.macs for t in r.breakdown) or 1
    rows = [{"type": t.type, "macs": t.macs, "other_ops": t.ops, "time_ms": 1e3 * t.time_s, "calls": t.calls,
             "macs_share": t.macs / total_m, "time_share": t.time_s / total_t,
             "gflop_per_s_macc": to_flops(t.macs, t.ops, "macc") / t.time_s / 1e9 if t.time_s else None,
             "gflop_per_s_nvidia": to_flops(t.macs, t.ops, "nvidia") / t.time_s / 1e9 if t.time_s else None}
            for t in r.breakdown]
    if predicted is not None:
        total_p = sum(predicted.values()) or 1.0
        for row in rows:
            p = predicted.get(row["type"])
            row.update(predicted_ms=None if p is None else 1e3 * p, predicted_share=None if p is None else p / total_p)
    return rows


def ratio_text(q: Any) -> str:
    """'0.86× [0.80, 0.93]', or 'no measurable difference (0.98× [0.91, 1.04])' when the interval holds 1."""
    if q is None:
        return "-"
    core = f"{q.median:.2f}× [{q.low:.2f}, {q.high:.2f}]"
    return core if q.measurable else f"no measurable difference ({core})"


def ratio_json(q: Any) -> dict[str, Any] | None:
    """A RatioStat as a JSON object: median, 95% interval, IQR, rounds, measurable."""
    if q is None:
        return None
    return {"median": q.median, "low": q.low, "high": q.high, "iqr": q.iqr, "rounds": len(q.rounds),
            "measurable": q.measurable}


def bench_flags(r: Any) -> str:
    """Notes cell of a benchmark row: status and reason, noisy, batch halved by --auto-batch."""
    flags = []
    if r.status == "interrupted":
        flags.append(f"interrupted after {r.rounds} rounds")
    elif r.status != "ok":
        flags.append(r.status.upper() + (f": {r.error}" if r.error and r.error != "out of memory" else ""))
    if r.noisy:
        flags.append("noisy")
    if r.requested_batch_size and r.requested_batch_size != r.batch_size:
        flags.append(f"batch halved from {r.requested_batch_size}")
    return "; ".join(flags)


def peak_share(r: Any, peaks: dict[str, Any] | None) -> dict[str, Any] | None:
    """Achieved FLOP/s (nvidia, every op) and bytes/s of one result at its median latency, as shares of the
    device profile's peak FLOP/s and bandwidth; None without a profile or a count."""
    traffic = (peaks or {}).get("traffic", {}).get((r.model, r.batch_size))
    if traffic is None or not r.median_s:
        return None
    flops_s, bytes_s = traffic["flops"] / r.median_s, traffic["bytes"] / r.median_s
    return {"flop_per_s": flops_s, "bytes_per_s": bytes_s, "flops_share": flops_s / peaks["peak_flops"],
            "bandwidth_share": bytes_s / peaks["bandwidth"]}


def _type_peak_shares(rows: list[dict[str, Any]], r: Any, peaks: dict[str, Any] | None) -> None:
    """Each breakdown row's achieved FLOP/s and bytes/s as shares of the profile's peak and bandwidth."""
    traffic = (peaks or {}).get("traffic", {}).get((r.model, r.batch_size))
    if traffic is None:
        return
    for row, t in zip(rows, r.breakdown):
        _, nbytes = traffic["types"].get(row["type"], (0, 0))
        flops = to_flops(t.macs, t.ops, "nvidia")
        row.update(flops_share=flops / t.time_s / peaks["peak_flops"] if t.time_s else None,
                   bandwidth_share=nbytes / t.time_s / peaks["bandwidth"] if t.time_s and nbytes else None)


def bench_report(results: list[Any], settings: dict[str, Any] | None = None, ratios: list[Any] | None = None,
                 predicted: Predicted | None = None, peaks: dict[str, Any] | None = None) -> Report:
    """results: BenchResult per (model, batch size); settings: the run's "warmup" and "min_time" seconds (said
    under the throughput table when given); ratios: per result, its interleaved latency ratio to the first model
    at that batch size (RatioStat or None); predicted: (model, batch size) -> predicted seconds per layer type,
    shown next to a --breakdown; peaks: the device profile's "peak_flops" and "bandwidth" (with its
    "device_name" and "threads") and per (model, batch size) the counted "traffic" (flops, bytes, and per layer
    type), for achieved rates as shares of the peak."""
    ratios = list(ratios) if ratios is not None else [None] * len(results)
    json_rows = [bench_json(r) for r in results]
    for r, j in zip(results, json_rows):
        if peaks is not None:
            j["peak_share"] = peak_share(r, peaks)
        if r.breakdown and (predicted or peaks):
            j["breakdown"] = breakdown_rows(r, _predicted_of(predicted, r))
            _type_peak_shares(j["breakdown"], r, peaks)
    refs = _add_ratios(results, json_rows, ratios)
    rows = [{**j, "flags": bench_flags(r),
             "ratio_text": ratio_text(q) if q is not None or refs.get(r.batch_size) != r.model else "ref"}
            for r, j, q in zip(results, json_rows, ratios)]
    tables = [_latency_table(results, rows), _speed_table(results, rows, settings, peaks)]
    if any(q is not None for q in ratios):
        tables.append(_ratio_table(rows, refs))
    tables += [_breakdown_table(r, _predicted_of(predicted, r), peaks) for r in results if r.breakdown]
    return Report(tables, json_rows, [_csv_row(r, j) for r, j in zip(results, json_rows)])


def _predicted_of(predicted: Predicted | None, r: Any) -> dict[str, float] | None:
    return (predicted or {}).get((r.model, r.batch_size))


def _add_ratios(results: list[Any], json_rows: list[dict[str, Any]], ratios: list[Any]) -> dict[int, str]:
    """Put each result's latency ratio and its reference into its JSON row; returns batch size -> reference
    (the first model timed in rounds at that batch size)."""
    refs: dict[int, str] = {}
    for r, j, q in zip(results, json_rows, ratios):
        if r.rounds and r.batch_size not in refs:
            refs[r.batch_size] = r.model
        if any(x is not None for x in ratios):
            j["latency_ratio"] = ratio_json(q)
            j["ratio_reference"] = refs.get(r.batch_size) if q is not None else None
    return refs


def _ms(key: str):
    return lambda v: "-" if v is None else f"{v[key]:,.2f}" if v.get(key) is not None else "-"


def _gflops(convention: str):
    return lambda g: "-" if not g or g[convention] is None else f"{g[convention]:,.1f}"


def _memory(m: dict[str, Any] | None) -> str:
    return "-" if not m or m["allocated"] is None else f"{si(m['allocated'], 1)}B / {si(m['reserved'], 1)}B"


def _peak_mib(m: dict[str, Any] | None) -> str:
    """'812.4 / 801.9': the measured and the predicted peak of one call, in MiB."""
    if not m or m.get("measured") is None:
        return "-"
    predicted = "-" if m.get("predicted") is None else f"{m['predicted'] / 2**20:,.1f}"
    return f"{m['measured'] / 2**20:,.1f} / {predicted}"


def _what(results: list[Any]) -> str:
    """What was timed: forward passes, or training steps with their optimizer."""
    train = [r for r in results if r.mode == "train"]
    if not train:
        return "Forward-pass latency (inference_mode, warm-up excluded)"
    return f"Training-step latency (forward, loss, backward, {train[0].optimizer} step; warm-up excluded)"


def _latency_table(results: list[Any], rows: list[dict[str, Any]]) -> Table:
    stats = [("median", "Median (ms)"), ("mean", "Mean (ms)"), ("min", "Min (ms)"), ("p90", "P90 (ms)"),
             ("p99", "P99 (ms)"), ("iqr", "IQR (ms)")]
    table = Table(_what(results), [
        Column("model", "Model", justify="left"), Column("batch_size", "Batch", integer),
        *(Column("latency_ms", header, _ms(key), short=SHORT_HEADERS[header]) for key, header in stats),
        Column("runs", "Runs", integer), Column("flags", "Notes", justify="left"),
    ], rows)
    if any(r.noisy for r in results):
        table.notes.append("noisy: IQR above 10% of the median (torch.utils.benchmark's rule); rerun on a quieter "
                           "machine or with a longer --min-time.")
    return table


def _share(key: str):
    return lambda v: "-" if not v or v.get(key) is None else f"{100 * v[key]:.1f}%"


def _peaks_note(peaks: dict[str, Any]) -> str:
    threads = peaks.get("threads")
    return (f"% of peak: achieved FLOP/s (nvidia convention, every op counted) and bytes/s (ideal-cache traffic) at "
            f"the median latency, over the cached device profile of {peaks.get('device_name')}"
            f"{f' at {threads} thread' + ('' if threads == 1 else 's') if threads else ''}: peak "
            f"{peaks['peak_flops'] / 1e9:,.1f} GFLOP/s, bandwidth {peaks['bandwidth'] / 1e9:,.1f} GB/s.")


def _speed_table(results: list[Any], rows: list[dict[str, Any]], settings: dict[str, Any] | None,
                 peaks: dict[str, Any] | None = None) -> Table:
    cols = [Column("model", "Model", justify="left"), Column("batch_size", "Batch", integer),
            Column("throughput", "Samples/s", fixed(1)),
            Column("gflop_per_s", "GFLOP/s [macc]", _gflops("macc"), short="GF/s macc"),
            Column("gflop_per_s", "GFLOP/s [nvidia]", _gflops("nvidia"), short="GF/s nv"),
            Column("cold_ms", "Cold call (ms)", fixed(1), short="Cold ms")]
    if peaks is not None:
        cols += [Column("peak_share", "% of peak FLOP/s", _share("flops_share"), short="% peak"),
                 Column("peak_share", "% of bandwidth", _share("bandwidth_share"), short="% BW")]
    if any(r.compile_s for r in results):
        cols.append(Column("compile_ms", "Compile (ms)", fixed(0)))
    if any(r.device == "cuda" for r in results):
        cols.append(Column("peak_memory_bytes", "Peak CUDA mem (alloc / reserved)", _memory))
    if any(r.measured_peak is not None for r in results):
        cols.append(Column("peak_bytes", "Peak MiB (measured / predicted)", _peak_mib, short="Peak MiB m/p"))
    table = Table("Throughput and achieved FLOP rate (conv-scope FLOPs at the median latency)", cols, rows)
    if any(r.measured_peak is not None for r in results):
        table.notes.append("Peak MiB: one more, untimed call; measured on a CPU as the allocator's peak "
                           "over the call (torch.profiler memory events) plus the resident parameters, buffers, "
                           "inputs and optimizer state, on CUDA as max_memory_allocated; predicted on meta as "
                           "`cnnprof memory` does.")
    if any(r.mode == "train" for r in results):
        table.notes.append("Training steps: the FLOP rates count the forward pass's FLOPs only.")
    env = results[0].env if results else None
    if env:
        parts = [f"torch {env.torch_version}", f"{env.device} ({env.device_name})",
                 f"{env.threads} thread{'' if env.threads == 1 else 's'}", env.dtype,
                 f"channels_last {'on' if env.channels_last else 'off'}", f"compile {'on' if env.compiled else 'off'}"]
        if settings is not None:
            parts += [f"warm-up {settings['warmup']} s", f"min time {settings['min_time']} s"]
        table.caption = " · ".join(parts)
    if peaks is not None:
        table.notes.append(_peaks_note(peaks))
    return table


def _ratio_table(rows: list[dict[str, Any]], refs: dict[int, str]) -> Table:
    table = Table("Latency relative to the first model (median of per-round ratios, interleaved rounds; "
                  "[95% interval])",
                  [Column("model", "Model", justify="left"), Column("batch_size", "Batch", integer),
                   Column("ratio_text", "Latency vs ref", justify="left")],
                  [row for row in rows if row["rounds"]])
    table.notes.append("Models were timed in rotating rounds (A B C, B C A, ...); each ratio is taken within a "
                       "round, so drift of the machine cancels. An interval that includes 1.00× is no measurable "
                       "difference. Reference: " + ", ".join(f"{m} at batch {b}" for b, m in refs.items()) + ".")
    return table


def _breakdown_table(r: Any, predicted: dict[str, float] | None, peaks: dict[str, Any] | None = None) -> Table:
    """Share of MACs vs share of measured (and predicted) time by layer type, for one --breakdown result."""
    parts = breakdown_rows(r, predicted)
    _type_peak_shares(parts, r, peaks)
    shares = any("flops_share" in p for p in parts)
    cols = [Column("type", "Type", justify="left"), Column("macs", "MACs", si),
            Column("macs_share", "Share of MACs", _bar, "left", no_wrap=True),
            Column("time_ms", "Time (ms)", fixed(2)),
            Column("time_share", "Share of time", _bar, "left", no_wrap=True)]
    if predicted is not None:
        cols += [Column("predicted_ms", "Predicted (ms)", fixed(2)),
                 Column("predicted_share", "Predicted share", _bar, "left", no_wrap=True)]
    cols.append(Column("gflop_per_s_macc", "GFLOP/s [macc]", fixed(1), short="GFLOP/s"))
    if shares:
        cols += [Column("flops_share", "% of peak FLOP/s", percent, short="% peak"),
                 Column("bandwidth_share", "% of bandwidth", percent, short="% BW")]
    table = Table(f"{r.model} (batch {r.batch_size}, {r.device}): share of MACs vs share of measured time by layer type",
                  cols, parts)
    if predicted is not None:
        table.notes.append("Predicted: the latency of `cnnprof roofline` (layers of the device's layer table at "
                           "their measured time, the rest per-op-type calibrated; memory copies fall under 'other'), "
                           "without running the model.")
    if shares:
        table.notes.append(_peaks_note(peaks))
    covered = sum(p["time_ms"] for p in parts) / (1e3 * r.median_s) if r.median_s else 0
    table.notes.append(f"Per-op times come from separate instrumented passes (every aten op timed on its "
                       f"own); they add up to {100 * covered:.0f}% of the median latency, and the "
                       f"shares are of their sum.")
    return table


def _csv_row(r: Any, j: dict[str, Any]) -> dict[str, Any]:
    """One result flat: latency statistics, ratio, FLOP rates and peak memory as columns of their own."""
    flat = {k: v for k, v in j.items()
            if k not in ("latency_ms", "gflop_per_s", "peak_memory_bytes", "peak_bytes", "env", "breakdown",
                         "latency_ratio", "peak_share")}
    if j.get("peak_share"):
        flat.update({f"peak_{k}": v for k, v in j["peak_share"].items()})
    flat.update({f"latency_{k}_ms": v for k, v in j["latency_ms"].items()})
    if j.get("latency_ratio"):
        flat.update({f"latency_ratio_{k}": v for k, v in j["latency_ratio"].items()})
    flat.update(gflop_per_s_macc=j["gflop_per_s"]["macc"], gflop_per_s_nvidia=j["gflop_per_s"]["nvidia"],
                peak_allocated_bytes=j["peak_memory_bytes"]["allocated"],
                peak_reserved_bytes=j["peak_memory_bytes"]["reserved"],
                peak_measured_bytes=j["peak_bytes"]["measured"], peak_predicted_bytes=j["peak_bytes"]["predicted"],
                torch_version=r.env.torch_version, device_name=r.env.device_name, threads=r.env.threads)
    return flat
