"""Reports of the runtime-structure analyzers: device peaks, roofline tables and the roofline plot."""
from __future__ import annotations

from typing import Any

from cnnprof.report.render import Column, OutputError, Report, Table, fixed, integer, percent, shape, si

NVIDIA_FLOPS_NOTE = ("FLOPs here are in the nvidia convention (1 MAC = 2 FLOPs) and include norm / activation / "
                     "pooling / element-wise ops (scope all); intensity = FLOPs / byte moved, bytes at the run's "
                     "dtype under an ideal cache (every tensor an op touches read or written once).")


def _gflops(v: float | None) -> str:
    return "-" if v is None else f"{v / 1e9:,.1f}"


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e6:,.2f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:,.3f}"


def _rate(v: float | None) -> str:
    return "-" if v is None or v >= 1e300 else f"{v / 1e9:,.1f}"


def device_report(profile: Any, cache_file: str | None = None) -> Report:
    """Peaks, overheads and calibration table of one DeviceProfile."""
    data = profile.to_json()
    rows = [{"quantity": f"peak FLOP/s ({dt})", "value": _gflops(v), "unit": "GFLOP/s"}
            for dt, v in profile.peak_flops.items()]
    rows += [{"quantity": "memory bandwidth (best of copy, triad)", "value": _gflops(profile.bandwidth), "unit": "GB/s"}]
    if profile.copy_bandwidth:
        rows += [{"quantity": "  copy", "value": _gflops(profile.copy_bandwidth), "unit": "GB/s"},
                 {"quantity": "  triad", "value": _gflops(profile.triad_bandwidth), "unit": "GB/s"}]
    rows += [{"quantity": "ridge point (float32)", "value": f"{profile.ridge():,.1f}", "unit": "FLOP/byte"},
             {"quantity": "per-op dispatch / launch overhead", "value": _us(profile.op_overhead_s), "unit": "µs"},
             {"quantity": "per-module call overhead", "value": _us(profile.module_overhead_s), "unit": "µs"}]
    source = {"measured": "measured on this machine", "datasheet": "DATASHEET peaks, not measured",
              "file": "loaded from a profile file"}[profile.source]
    main = Table(f"Device: {profile.name} ({profile.device}) — {source}",
                 [Column("quantity", "Quantity", justify="left"), Column("value", "Value"),
                  Column("unit", "Unit", justify="left")], rows)
    main.caption = f"torch {profile.torch_version} · {profile.threads} threads" + (
        f" · measured in {profile.seconds:.1f} s" if profile.source == "measured" else "")
    main.notes.append("FLOP/s are in the nvidia convention (1 MAC = 2 FLOPs).")
    if not profile.complete:
        main.notes.append("Interrupted: only what was measured before Ctrl-C is kept; rerun to complete.")
    if cache_file:
        main.notes.append(f"Saved to {cache_file}; roofline, compare --predict and bench --breakdown reuse it.")
    tables = [main]
    if profile.calibration:
        cal = [{"op_type": k, "samples": f.samples, "overhead_s": f.overhead_s, "flops_per_s": f.flops_per_s,
                "bytes_per_s": f.bytes_per_s, "median_error": f.median_error}
               for k, f in profile.calibration.items()]
        t = Table(f"Per-op-type calibration ({profile.calibration_dtype}, single-layer micro-benchmarks): "
                  f"t = overhead + FLOPs / rate + bytes / bandwidth",
                  [Column("op_type", "Op type", justify="left"), Column("samples", "Layers", integer),
                   Column("overhead_s", "Overhead (µs)", _us), Column("flops_per_s", "Rate (GFLOP/s)", _rate),
                   Column("bytes_per_s", "Bandwidth (GB/s)", _rate), Column("median_error", "Fit error", percent)],
                  cal)
        t.notes.append("'-' rate or bandwidth: that term does not explain the time of this op type (fitted to zero).")
        tables.append(t)
    return Report(tables, [data], [{k: v for k, v in data.items() if not isinstance(v, dict)}
                                   | {f"peak_{k}": v for k, v in data["peak_flops"].items()}])


def time_sources(pred: Any) -> dict[str, float]:
    """Shares of a prediction's time by where they come from: measured layers, calibrated model, roofline,
    module and view overheads."""
    parts = pred.time_sources()
    total = sum(parts.values()) or 1.0
    return {k: v / total for k, v in parts.items()}


def profile_text(pred: Any) -> str:
    """Which device profile and thread count a prediction used, and where its time comes from, in words."""
    source = "DATASHEET (not measured)" if pred.source == "datasheet" else pred.source
    threads = f", {pred.threads} thread{'' if pred.threads == 1 else 's'}" if pred.threads else ""
    shares = ", ".join(f"{100 * v:.0f}% {k}" for k, v in time_sources(pred).items() if v)
    return f"profile {pred.device_name} ({source}{threads}, {pred.dtype}); predicted time from {shares or 'nothing'}"


SOURCES_NOTE = ("Predicted time from: measured = layers timed on this device (its layer table, filled on first use; "
                "on the CPU inside each model's own sequence of calls); calibrated = the per-op-type model; "
                "roofline = op types without a calibration; overhead = module calls and views.")


def _ridge_notes(pred: Any) -> list[str]:
    """Which conv / linear types sit below and above the ridge point, in words."""
    notes = []
    for r in pred.by_type():
        if r["name"].endswith("conv") or r["name"].startswith("conv ") or r["name"] == "linear":
            where = "below" if r["intensity"] < pred.ridge else "above"
            bound = "memory-bound" if where == "below" else "compute-bound"
            notes.append(f"{r['name']}: {r['intensity']:.1f} FLOP/B, {where} the ridge ({pred.ridge:.1f} FLOP/B): "
                         f"{bound}")
    return notes


def roofline_report(preds: list[Any], by: str = "type") -> Report:
    """LatencyPredictions: one summary row per model and one roofline table per model at `by` granularity
    ("type", "stage" or "layer")."""
    if not preds:
        return Report([], [], [])
    json_rows, csv_rows, tables = [], [], []
    for p in preds:
        row = _summary_row(p)
        rows = _group_rows(p, by, row["macs"])
        row[f"by_{by}"] = rows
        json_rows.append(row)
        csv_rows.append({k: v for k, v in row.items() if not isinstance(v, (list, dict))}
                        | {"input_shape": shape(p.input_shape), "ridge_notes": " | ".join(row["ridge_notes"])})
        csv_rows += [{"model": p.model, "by": by, **r} for r in rows]
        tables.append(_model_table(p, by, rows, row["ridge_notes"]))
    return Report([_summary_table(preds[0], json_rows, [profile_text(p) for p in preds]), *tables], json_rows,
                  csv_rows)


def _summary_row(p: Any) -> dict[str, Any]:
    """Totals of one prediction: traffic, both predicted times, the device's roofs."""
    tot = p.memory.total()
    return {"model": p.model, "input_shape": list(p.input_shape), "dtype": p.dtype, "device": p.device,
            "device_name": p.device_name, "profile": p.source, "macs": tot.macs, "flops": tot.flops,
            "acts": tot.acts, "bytes": tot.bytes, "intensity": tot.intensity, "ops": len(p.ops),
            "module_calls": p.module_calls, "roofline_ms": 1e3 * p.roofline_s,
            "calibrated_ms": None if p.calibrated_s is None else 1e3 * p.calibrated_s,
            "predicted_ms": 1e3 * p.predicted_s, "threads": p.threads, "time_sources": time_sources(p),
            "peak_flops": p.peak_flops, "bandwidth": p.bandwidth, "ridge": p.ridge,
            "ridge_notes": _ridge_notes(p)}


def _group_rows(p: Any, by: str, macs: int) -> list[dict[str, Any]]:
    """Rows per group with times in ms and shares of the predicted time (calibrated when there is one) and MACs."""
    rows = {"layer": p.by_layer, "type": p.by_type, "stage": p.by_stage}[by]()
    total_t = sum(r["predicted_s"] for r in rows) or 1.0
    total_m = macs or 1
    for r in rows:
        r.update(time_share=r["predicted_s"] / total_t, macs_share=r["macs"] / total_m,
                 roofline_ms=1e3 * r["roofline_s"], calibrated_ms=1e3 * r["calibrated_s"] if p.calibrated else None,
                 predicted_ms=1e3 * r["predicted_s"])
        for k in ("compute_s", "memory_s", "overhead_s", "roofline_s", "calibrated_s", "predicted_s"):
            r.pop(k)
    return rows


def _model_table(p: Any, by: str, rows: list[dict[str, Any]], notes: list[str]) -> Table:
    cols = [Column("name", {"layer": "Layer [op]"}.get(by, by.capitalize()), justify="left"),
            Column("macs", "MACs", si), Column("bytes", "Bytes", si), Column("intensity", "FLOP/B", fixed(2)),
            Column("attainable", "Attainable GFLOP/s", _gflops), Column("bound", "Bound", justify="left"),
            Column("roofline_ms", "Roofline (ms)", fixed(3))]
    if p.calibrated:
        cols.append(Column("calibrated_ms", "Calibrated (ms)", fixed(3)))
    if p.measured:
        cols.append(Column("predicted_ms", "Predicted (ms)", fixed(3)))
    cols += [Column("time_share", "Share of time", percent), Column("macs_share", "Share of MACs", percent)]
    table = Table(f"{p.model} ({shape(p.input_shape)}, {p.dtype}) on the roofline of {p.device_name}: by {by}",
                  cols, rows)
    table.notes += notes
    return table


def _summary_table(p0: Any, rows: list[dict[str, Any]], texts: list[str]) -> Table:
    """One row per model, captioned with the first prediction's device (every model is on the same one)."""
    cols = [Column("model", "Model", justify="left"), Column("input_shape", "Input", shape),
            Column("macs", "MACs", si), Column("acts", "Acts", si), Column("bytes", "Bytes moved", si),
            Column("intensity", "FLOP/B", fixed(2)), Column("roofline_ms", "Roofline (ms)", fixed(3))]
    if any(r["calibrated_ms"] is not None for r in rows):
        cols.append(Column("calibrated_ms", "Calibrated (ms)", fixed(3)))
    if any(r["time_sources"]["measured"] for r in rows):
        cols.append(Column("predicted_ms", "Predicted (ms)", fixed(3)))
    summary = Table("Predicted latency (roofline and per-op-type calibrated) and memory traffic", cols, rows)
    source = "DATASHEET (not measured)" if p0.source == "datasheet" else p0.source
    summary.caption = (f"{p0.device_name} ({source}): peak {p0.peak_flops / 1e9:,.1f} GFLOP/s ({p0.dtype}), "
                       f"bandwidth {p0.bandwidth / 1e9:,.1f} GB/s, ridge {p0.ridge:.1f} FLOP/B")
    summary.notes += [f"{r['model']}: {text}." for r, text in zip(rows, texts)] + [SOURCES_NOTE]
    summary.notes.append(NVIDIA_FLOPS_NOTE)
    if getattr(p0, "latency_model", ""):
        summary.notes.append(f"Calibrated: {p0.latency_model}, on the datasheet figures above.")
    summary.notes.append("Bound: compute or memory roof, or 'overhead' when the per-op dispatch cost exceeds both.")
    return summary


def plot_roofline(preds: list[Any], path: str) -> None:
    """Log-log roofline chart: the two roofs and every op as a point sized by predicted time, coloured by
    layer type, one marker per model. Writes PNG or SVG (by extension) with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p0 = preds[0]
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=120)
    points = [(p, op) for p in preds for op in p.ops if op.call.bytes and op.call.flops]
    xs = [op.call.intensity for _, op in points] or [p0.ridge]
    lo, hi = min(min(xs), p0.ridge) / 3, max(max(xs), p0.ridge) * 3
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [min(p0.peak_flops, x * p0.bandwidth) / 1e9 for x in grid], color="black", lw=2,
            label=f"roofs: {p0.peak_flops / 1e9:,.0f} GFLOP/s, {p0.bandwidth / 1e9:,.1f} GB/s")
    ax.axvline(p0.ridge, color="grey", ls=":", lw=1)
    ax.text(p0.ridge, p0.peak_flops / 1e9 * 1.15, f"ridge {p0.ridge:.1f} FLOP/B", ha="center", fontsize=8)
    types = sorted({op.call.type for _, op in points})
    cmap = plt.get_cmap("tab10" if len(types) <= 10 else "tab20")
    colour = {t: cmap(i % cmap.N) for i, t in enumerate(types)}
    markers = "os^DvP*X"
    tmax = max((op.calibrated_s or op.roofline_s for _, op in points), default=1.0)
    for mi, p in enumerate(preds):
        for t in types:
            ops = [op for q, op in points if q is p and op.call.type == t]
            if not ops:
                continue
            times = [op.calibrated_s if op.calibrated_s is not None else op.roofline_s for op in ops]
            ax.scatter([op.call.intensity for op in ops], [op.call.flops / s / 1e9 for op, s in zip(ops, times)],
                       s=[10 + 400 * s / tmax for s in times], c=[colour[t]], marker=markers[mi % len(markers)],
                       alpha=0.6, edgecolors="black", linewidths=0.3)
    for t in types:  # legend entries of one size, whatever the points' sizes
        ax.scatter([], [], s=40, c=[colour[t]], edgecolors="black", linewidths=0.3, label=t)
    for mi, p in enumerate(preds):
        ax.scatter([], [], marker=markers[mi % len(markers)], c="white", edgecolors="black", label=p.model)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte; 1 MAC = 2 FLOPs)")
    ax.set_ylabel("predicted attained GFLOP/s")
    timing = "calibrated" if p0.calibrated else "roofline"
    ax.set_title(f"Roofline of {p0.device_name} ({p0.source}, {p0.dtype}); points: ops, size = {timing} time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:  # the folder was checked before the work: this is the write failing
        raise OutputError(f"--plot {path}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
