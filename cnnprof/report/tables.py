"""Per-command report builders: results in, (tables, JSON rows, CSV rows) out."""
from __future__ import annotations

from typing import Any, Sequence

from cnnprof.counting.conventions import to_flops
from cnnprof.counting.types import module_depth
from cnnprof.report.render import Column, Table, fixed, integer, percent, ratio, ratio_short, shape, si

CONVENTION_TEXT = {"macc": "macc (1 MAC = 1 FLOP)", "nvidia": "nvidia (1 MAC = 2 FLOPs)"}
SCOPE_TEXT = {"conv": "conv (convolution and linear layers only)",
              "all": "all (conv, linear, norm, activations, pooling, element-wise)"}
Report = tuple[list[Table], list[dict[str, Any]], list[dict[str, Any]]]


def _share(part: int, total: int) -> float:
    return part / total if total else 0.0


def zoo_report(rows: list[dict[str, Any]]) -> Report:
    table = Table(f"cnnprof zoo: {len(rows)} models", [
        Column("model", "Model", justify="left"), Column("family", "Family", justify="left"),
        Column("summary", "Description / paper", justify="left"),
    ], [{**r, "model": "\n".join([r["model"], *(f"  ({a})" for a in r["aliases"])]),
         "summary": f"{r['description']}\n{r['paper']}"} for r in rows])
    table.notes = ["A MODEL argument may be a name or alias above, a .yaml config file, or module:callable."]
    csv_rows = [{**r, "aliases": " ".join(r["aliases"])} for r in rows]
    return [table], rows, csv_rows


def _breakdown_rows(items: Sequence[tuple[str, int]], total: int, key: str) -> list[dict[str, Any]]:
    return [{"name": name, key: value, "share": _share(value, total)} for name, value in items]


def params_report(results: list[tuple[str, Any]], by: str | None, depth: int | None) -> Report:
    """results: (model label, ParamCount) or (label, ParamCount, {module: (input shape, output shape)})."""
    main = Table("Parameters", [
        Column("model", "Model", justify="left"), Column("params", "Params", integer),
        Column("size", "Params (≈)", si), Column("trainable_params", "Trainable", integer),
        Column("non_trainable_params", "Non-trainable", integer),
    ], [])
    tables, json_rows, csv_rows = [main], [], []
    for label, pc, *extra in results:
        shapes = extra[0] if extra and extra[0] else None
        row = {"model": label, "params": pc.total, "trainable_params": pc.trainable,
               "non_trainable_params": pc.non_trainable}
        main.rows.append({**row, "size": pc.total})
        if by:
            items = _param_items(pc, by, depth)
            rows = _breakdown_rows(items, pc.total, "params")
            if by == "layer" and shapes:
                for r in rows:
                    i, o = shapes.get("" if r["name"] == "(model)" else r["name"], (None, None))
                    r["in_shape"], r["out_shape"] = (list(i) if i else None), (list(o) if o else None)
            row[f"by_{by}"] = rows
            csv_rows += [{"model": label, "by": by, **r} for r in rows]
            shape_cols = [Column("in_shape", "Input", _shape_or_dash), Column("out_shape", "Output", _shape_or_dash)]
            tables.append(Table(f"{label}: parameters by {by}", [
                Column("name", by.capitalize(), _indent if by == "layer" else str, "left"),
                *(shape_cols if by == "layer" and shapes else []),
                Column("params", "Params", integer), Column("share", "Share", percent),
            ], rows))
        else:
            csv_rows.append(row)
        json_rows.append(row)
    return tables, json_rows, csv_rows


def _param_items(pc: Any, by: str, depth: int | None) -> list[tuple[str, int]]:
    if by == "stage":
        return list(pc.by_stage)
    if by == "type":
        return list(pc.by_type)
    return [(name or "(model)", n) for name, n in pc.by_module
            if n and (depth is None or module_depth(name) <= depth)]


def _shape_or_dash(value: Any) -> str:
    return shape(value) if value else "-"


def _indent(name: str) -> str:
    if name == "(model)":
        return name
    return "  " * module_depth(name) + name


def flops_report(results: list[tuple[Any, int, dict[str, int] | None]], convention: str, by: str | None,
                 depth: int | None) -> Report:
    """results: (FlopCount, params, params per module path or None)."""
    scope = results[0][0].scope if results else "conv"
    # One input for every row: say it once in the title, so that narrow terminals keep the numbers.
    inputs = {fc.input_shape for fc, _, _ in results}
    common_input = f" at {shape(next(iter(inputs)))}" if len(inputs) == 1 else ""
    columns = [Column("model", "Model", justify="left")]
    columns += [] if common_input else [Column("input_shape", "Input", shape)]
    columns += [Column("params", "Params", si), Column("macs", "MACs", si), Column("acts", "Acts", si)]
    if scope == "all":
        columns.append(Column("other_ops", "Other ops", si))
    columns.append(Column("flops", f"FLOPs [{convention}]", si))
    main = Table(f"FLOPs per forward pass{common_input} — convention: {CONVENTION_TEXT[convention]}; "
                 f"scope: {SCOPE_TEXT[scope]}", columns, [])
    tables, json_rows, csv_rows = [main], [], []
    for fc, params, module_params in results:
        flops = fc.flops(convention)
        row = {"model": fc.model, "flops": flops, "macs": fc.macs, "acts": fc.acts, "other_ops": fc.other_ops,
               "convention": convention, "scope": fc.scope, "backend": fc.backend,
               "input_shape": list(fc.input_shape), "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in fc.inputs],
               "method": fc.method,
               "params": params, "uncounted_ops": dict(fc.uncounted)}
        main.rows.append({**row, "input_shape": fc.input_shape})
        if fc.method == "cpu" and fc.backend == "torch":
            main.notes.append(f"{fc.model}: counted by one real forward pass on the CPU (it cannot run on the meta "
                              f"device: data-dependent ops or values read); inputs: floats uniform in [0, 1), "
                              f"ints and bools zero, so data-dependent parts count for those values.")
        if len(fc.inputs) > 1 or any(i.name or i.dtype != "float32" for i in fc.inputs):
            main.notes.append(f"{fc.model}: inputs {', '.join(str(i) for i in fc.inputs)}")
        if fc.uncounted:
            main.notes.append(f"{fc.model}: ops that ran but have no formula (not counted): "
                              + ", ".join(f"{op} ×{n}" for op, n in fc.uncounted))
        if by:
            rows = _flops_breakdown(fc, by, depth, convention, flops, module_params)
            row[f"by_{by}"] = rows
            csv_rows += [{"model": fc.model, "by": by, "convention": convention, "scope": fc.scope, **r} for r in rows]
            cols = [Column("name", {"layer": "Module", "op": "Op"}.get(by, by.capitalize()),
                           _indent if by == "layer" else str, "left")]
            if by == "layer":
                cols += [Column("in_shape", "Input", _shape_or_dash), Column("out_shape", "Output", _shape_or_dash),
                         Column("params", "Params", si)]
            if by == "op":
                cols.append(Column("calls", "Calls", integer))
            cols += [Column("macs", "MACs", si)]
            cols += [Column("other_ops", "Other ops", si)] if fc.scope == "all" else []
            cols += [Column("flops", f"FLOPs [{convention}]", si), Column("share", "Share", percent)]
            tables.append(Table(f"{fc.model}: FLOPs by {by} ({shape(fc.input_shape)})", cols, rows))
        else:
            csv_rows.append({k: v for k, v in row.items() if k != "uncounted_ops"}
                            | {"uncounted_ops": " ".join(f"{op}:{n}" for op, n in fc.uncounted)})
        json_rows.append(row)
    main.notes.append("Acts: output elements of every conv, linear and windowed pooling layer (pycls's activations).")
    return tables, json_rows, csv_rows


def _flops_breakdown(fc: Any, by: str, depth: int | None, convention: str, total: int,
                     module_params: dict[str, int] | None) -> list[dict[str, Any]]:
    if by == "layer":
        shares = [(name, s) for name, s in fc.by_module(depth)]
    else:
        shares = [(s.name, s) for s in {"op": fc.by_op, "stage": fc.by_stage, "type": fc.by_type}[by]()]
    shapes = {name: (i, o) for name, i, o in getattr(fc, "module_shapes", ())}
    rows = []
    for name, s in shares:
        flops = s.flops(convention)
        row = {"name": s.name, "macs": s.macs, "other_ops": s.ops, "flops": flops, "share": _share(flops, total)}
        if by == "op":
            row["calls"] = s.calls
        if by == "layer" and module_params is not None:
            row["params"] = module_params.get(name, 0)
        if by == "layer":
            i, o = shapes.get(name, (None, None))
            row["in_shape"], row["out_shape"] = (list(i) if i else None), (list(o) if o else None)
        rows.append(row)
    return rows


def compare_report(rows: list[dict[str, Any]], convention: str, scope: str, bench: bool,
                   predict: bool = False) -> Report:
    """rows: one per model with params, macs, acts, flops, uncounted ops, (if predict) predicted latency and
    (if bench) latency, its interleaved ratio interval, status and noisy flag; the first row is the reference."""
    ref = rows[0]["model"] if rows else ""
    cols = [Column("model", "Model", justify="left"), Column("params", "Params", si),
            Column("params_ratio", "vs ref", ratio, short_fmt=ratio_short),
            Column("flops", f"FLOPs [{convention}]", si, short="FLOPs"),
            Column("flops_ratio", "vs ref", ratio, short_fmt=ratio_short), Column("acts", "Acts", si),
            Column("macs_per_param", "MACs/param", fixed(1), short="MAC/p")]
    if predict:
        cols += [Column("predicted_ms", "Predicted (ms)", fixed(2), short="Pred. ms"),
                 Column("predicted_ratio", "vs ref", ratio, short_fmt=ratio_short)]
    if bench:
        cols += [Column("latency_ms", "Latency (ms)", fixed(2), short="Lat. ms"),
                 Column("latency_text", "vs ref [95% interval]", justify="left", short="vs ref"),
                 Column("throughput", "Samples/s", fixed(1), short="Smp/s"),
                 Column("bench_notes", "Notes", justify="left")]
    shape_text = shape(rows[0]["input_shape"]) if rows else ""
    table_rows = []
    for i, r in enumerate(rows):
        row = {**r, "params_ratio": r["params_ratio"] if i else None, "flops_ratio": r["flops_ratio"] if i else None,
               "predicted_ratio": r.get("predicted_ratio") if i else None}
        if bench:
            interval = r.get("latency_ratio_interval")
            if i == 0:
                row["latency_text"] = "ref"
            elif interval is None or r.get("latency_ratio") is None:
                row["latency_text"] = "-"
            else:
                core = f"{r['latency_ratio']:.2f}× [{interval['low']:.2f}, {interval['high']:.2f}]"
                row["latency_text"] = core if interval["measurable"] else f"no measurable difference ({core})"
            notes = [] if r.get("bench_status") in (None, "ok") else [
                str(r["bench_status"]).upper() + (f": {r['bench_error']}" if r.get("bench_error") else "")]
            row["bench_notes"] = "; ".join(notes + (["noisy"] if r.get("noisy") else []))
        table_rows.append(row)
    table = Table(f"Model comparison at {shape_text} — FLOPs: {CONVENTION_TEXT[convention]}; scope: {SCOPE_TEXT[scope]}",
                  cols, table_rows)
    notes = [f"vs ref: ratio to {ref}, the first model."] if len(rows) > 1 else []
    for r in rows:
        if r.get("uncounted_ops"):
            notes.append(f"{r['model']}: ops that ran but have no formula (not counted): "
                         + ", ".join(f"{op} ×{n}" for op, n in r["uncounted_ops"].items()))
    notes += [f"{r['model']}: counted by one real forward pass on the CPU (it cannot run on the meta device)."
              for r in rows if r.get("method") == "cpu"]
    if bench and rows:
        notes.append(f"Latency: median forward pass on {rows[0].get('device', 'cpu')}, batch "
                     f"{rows[0]['input_shape'][0]}, models timed interleaved in rotating rounds; the latency ratio "
                     f"is the median of per-round ratios with a 95% bootstrap interval, and an interval that includes "
                     f"1.00× is no measurable difference. See `cnnprof bench` for the full statistics.")
        if any(r.get("noisy") for r in rows):
            notes.append("noisy: IQR above 10% of the median; rerun on a quieter machine or with a longer --min-time.")
    if predict and rows:
        notes.append(f"Predicted: {rows[0].get('prediction', 'calibrated')} latency on {rows[0].get('device_name')} "
                     f"({rows[0].get('profile')}) from per-op costs, without running the models (see `cnnprof roofline`).")
    table.notes = notes
    csv_rows = []
    for r in rows:
        flat = {k: v for k, v in r.items() if not isinstance(v, dict) and k != "latency_ratio_interval"}
        flat["uncounted_ops"] = " ".join(f"{op}:{n}" for op, n in (r.get("uncounted_ops") or {}).items())
        if r.get("latency_ratio_interval"):
            flat.update(latency_ratio_low=r["latency_ratio_interval"]["low"],
                        latency_ratio_high=r["latency_ratio_interval"]["high"],
                        latency_ratio_measurable=r["latency_ratio_interval"]["measurable"])
        csv_rows.append(flat)
    return [table], rows, csv_rows


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


def bench_report(results: list[Any], settings: dict[str, Any], ratios: list[Any] | None = None,
                 predicted: dict[tuple[str, int], dict[str, float]] | None = None) -> Report:
    """results: BenchResult per (model, batch size); settings: the options the run used; ratios: per result,
    its interleaved latency ratio to the first model at that batch size (RatioStat or None); predicted:
    (model, batch size) -> predicted seconds per layer type, shown next to a --breakdown."""
    def ms(key: str):
        return lambda v: "-" if v is None else f"{v[key]:,.2f}" if v.get(key) is not None else "-"

    def gflops(conv: str):
        return lambda g: "-" if not g or g[conv] is None else f"{g[conv]:,.1f}"

    ratios = list(ratios) if ratios is not None else [None] * len(results)
    json_rows = [bench_json(r) for r in results]
    pred_of = lambda r: (predicted or {}).get((r.model, r.batch_size))  # noqa: E731
    if predicted:
        for r, j in zip(results, json_rows):
            if r.breakdown:
                j["breakdown"] = breakdown_rows(r, pred_of(r))
    refs: dict[int, str] = {}
    for r, j, q in zip(results, json_rows, ratios):
        if r.rounds and r.batch_size not in refs:
            refs[r.batch_size] = r.model
        if any(x is not None for x in ratios):
            j["latency_ratio"] = ratio_json(q)
            j["ratio_reference"] = refs.get(r.batch_size) if q is not None else None
    rows = [{**j, "flags": bench_flags(r),
             "ratio_text": ratio_text(q) if q is not None or refs.get(r.batch_size) != r.model else "ref"}
            for r, j, q in zip(results, json_rows, ratios)]
    latency = Table("Forward-pass latency (inference_mode, warm-up excluded)", [
        Column("model", "Model", justify="left"), Column("batch_size", "Batch", integer),
        Column("latency_ms", "Median (ms)", ms("median")), Column("latency_ms", "Mean (ms)", ms("mean")),
        Column("latency_ms", "Min (ms)", ms("min")), Column("latency_ms", "P90 (ms)", ms("p90")),
        Column("latency_ms", "P99 (ms)", ms("p99")), Column("latency_ms", "IQR (ms)", ms("iqr")),
        Column("runs", "Runs", integer), Column("flags", "Notes", justify="left"),
    ], rows)
    for col in latency.columns:
        col_short = {"Median (ms)": "Med ms", "Mean (ms)": "Mean", "Min (ms)": "Min", "P90 (ms)": "P90",
                     "P99 (ms)": "P99", "IQR (ms)": "IQR"}.get(col.header)
        if col_short:
            object.__setattr__(col, "short", col_short)
    if any(r.noisy for r in results):
        latency.notes.append("noisy: IQR above 10% of the median (torch.utils.benchmark's rule); rerun on a quieter "
                             "machine or with a longer --min-time.")
    cols = [Column("model", "Model", justify="left"), Column("batch_size", "Batch", integer),
            Column("throughput", "Samples/s", fixed(1)),
            Column("gflop_per_s", "GFLOP/s [macc]", gflops("macc"), short="GF/s macc"),
            Column("gflop_per_s", "GFLOP/s [nvidia]", gflops("nvidia"), short="GF/s nv"),
            Column("cold_ms", "Cold call (ms)", fixed(1), short="Cold ms")]
    if any(r.compile_s for r in results):
        cols.append(Column("compile_ms", "Compile (ms)", fixed(0)))
    if any(r.device == "cuda" for r in results):
        cols.append(Column("peak_memory_bytes", "Peak CUDA mem (alloc / reserved)",
                           lambda m: "-" if not m or m["allocated"] is None
                           else f"{si(m['allocated'], 1)}B / {si(m['reserved'], 1)}B"))
    speed = Table("Throughput and achieved FLOP rate (conv-scope FLOPs at the median latency)", cols, rows)
    env = results[0].env if results else None
    if env:
        speed.caption = (f"torch {env.torch_version} · {env.device} ({env.device_name}) · {env.threads} thread{'' if env.threads == 1 else 's'} · "
                         f"{env.dtype} · channels_last {'on' if env.channels_last else 'off'} · "
                         f"compile {'on' if env.compiled else 'off'} · warm-up {settings['warmup']} s · "
                         f"min time {settings['min_time']} s")
    tables = [latency, speed]
    if any(q is not None for q in ratios):
        rel = Table("Latency relative to the first model (median of per-round ratios, interleaved rounds; "
                    "[95% interval])",
                    [Column("model", "Model", justify="left"), Column("batch_size", "Batch", integer),
                     Column("ratio_text", "Latency vs ref", justify="left")],
                    [row for row in rows if row["rounds"]])
        rel.notes.append("Models were timed in rotating rounds (A B C, B C A, ...); each ratio is taken within a "
                         "round, so drift of the machine cancels. An interval that includes 1.00× is no measurable "
                         "difference. Reference: " + ", ".join(f"{m} at batch {b}" for b, m in refs.items()) + ".")
        tables.append(rel)
    csv_rows = []
    for r, j in zip(results, json_rows):
        flat = {k: v for k, v in j.items()
                if k not in ("latency_ms", "gflop_per_s", "peak_memory_bytes", "env", "breakdown", "latency_ratio")}
        flat.update({f"latency_{k}_ms": v for k, v in j["latency_ms"].items()})
        if j.get("latency_ratio"):
            flat.update({f"latency_ratio_{k}": v for k, v in j["latency_ratio"].items()})
        flat.update(gflop_per_s_macc=j["gflop_per_s"]["macc"], gflop_per_s_nvidia=j["gflop_per_s"]["nvidia"],
                    peak_allocated_bytes=j["peak_memory_bytes"]["allocated"],
                    peak_reserved_bytes=j["peak_memory_bytes"]["reserved"],
                    torch_version=r.env.torch_version, device_name=r.env.device_name, threads=r.env.threads)
        csv_rows.append(flat)
        if r.breakdown:
            parts = breakdown_rows(r, pred_of(r))
            cols = [Column("type", "Type", justify="left"), Column("macs", "MACs", si),
                    Column("macs_share", "Share of MACs", _bar, "left", no_wrap=True),
                    Column("time_ms", "Time (ms)", fixed(2)),
                    Column("time_share", "Share of time", _bar, "left", no_wrap=True)]
            if pred_of(r) is not None:
                cols += [Column("predicted_ms", "Predicted (ms)", fixed(2)),
                         Column("predicted_share", "Predicted share", _bar, "left", no_wrap=True)]
            tables.append(Table(
                f"{r.model} (batch {r.batch_size}, {r.device}): share of MACs vs share of measured time by layer type",
                cols + [Column("gflop_per_s_macc", "GFLOP/s [macc]", fixed(1), short="GFLOP/s")], parts))
            if pred_of(r) is not None:
                tables[-1].notes.append("Predicted: per-op-kind calibrated latency of `cnnprof roofline` (memory "
                                        "copies fall under 'other'), from the model's structure alone.")
            covered = sum(p["time_ms"] for p in parts) / (1e3 * r.median_s) if r.median_s else 0
            tables[-1].notes.append(f"Per-op times come from separate instrumented passes (every aten op timed on its "
                                    f"own); they add up to {100 * covered:.0f}% of the median latency, and the "
                                    f"shares are of their sum.")
    return tables, json_rows, csv_rows
