"""`cnnprof compare`: models side by side, each as a ratio to the first (and its latency, when measured)."""
from __future__ import annotations

from typing import Any, Mapping

from cnnprof.report.counts import TRAIN_STEP, phase_flops
from cnnprof.report.labels import CONVENTION_TEXT, SCOPE_TEXT
from cnnprof.report.render import Column, Report, Table, fixed, ratio, ratio_short, shape, si
from cnnprof.report.roofline import SOURCES_NOTE, time_sources


def compare_report(rows: list[dict[str, Any]], convention: str = "macc", scope: str = "conv", bench: bool = False,
                   predict: bool = False, mode: str = "infer") -> Report:
    """rows: one per model with params, macs, acts, flops, uncounted ops, (if predict) predicted latency and
    (if bench) latency, its interleaved ratio interval, status and noisy flag; the first row is the reference
    (see compare_rows). mode "train": flops are a training step's, with its forward and backward parts."""
    shape_text = shape(rows[0]["input_shape"]) if rows else ""
    table_rows = []
    for i, r in enumerate(rows):
        row = {**r, "params_ratio": r["params_ratio"] if i else None, "flops_ratio": r["flops_ratio"] if i else None,
               "predicted_ratio": r.get("predicted_ratio") if i else None}
        if bench:
            row["latency_text"] = "ref" if i == 0 else _latency_text(r)
            row["bench_notes"] = _bench_notes(r)
        table_rows.append(row)
    columns = _columns(convention, bench, predict)
    what = "Model comparison"
    if mode == "train":
        columns, what = _train_columns(columns, convention), "Model comparison of training steps (forward + backward)"
    if len(rows) == 1:  # one model (a printed cnnprof.profile): nothing to be a ratio to
        columns = [c for c in columns if not c.key.endswith("_ratio") and c.key != "latency_text"]
        what = "Profile of a training step (forward + backward)" if mode == "train" else "Profile"
    table = Table(f"{what} at {shape_text} — FLOPs: {CONVENTION_TEXT[convention]}; scope: {SCOPE_TEXT[scope]}",
                  columns, table_rows)
    table.notes = _notes(rows, bench, predict)
    if mode == "train":
        table.notes.append(TRAIN_STEP + " Backward: gradients passed on to earlier layers plus the parameters' gradients "
                           "(JSON grad_input_flops, grad_weight_flops; see `cnnprof flops --mode train`).")
    return Report([table], rows, [_csv_row(r) for r in rows])


def _columns(convention: str, bench: bool, predict: bool) -> list[Column]:
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
    return cols


def _train_columns(columns: list[Column], convention: str) -> list[Column]:
    """A training step's columns: its total FLOPs, then its forward and backward parts after the ratio."""
    out = []
    for c in columns:
        out.append(Column(c.key, f"Train FLOPs [{convention}]", c.fmt, short="Train FLOPs") if c.key == "flops" else c)
        if c.key == "flops_ratio":
            out += [Column("forward_flops", f"Forward [{convention}]", si, short="Fwd"),
                    Column("backward_flops", f"Backward [{convention}]", si, short="Bwd")]
    return out


def _latency_text(r: dict[str, Any]) -> str:
    """'2.00× [1.90, 2.10]', 'no measurable difference (...)' when the interval holds 1, '-' when not timed."""
    interval = r.get("latency_ratio_interval")
    if interval is None or r.get("latency_ratio") is None:
        return "-"
    core = f"{r['latency_ratio']:.2f}× [{interval['low']:.2f}, {interval['high']:.2f}]"
    return core if interval["measurable"] else f"no measurable difference ({core})"


def _bench_notes(r: dict[str, Any]) -> str:
    """Notes cell: a failed measurement's status and error, and the noisy flag."""
    notes = [] if r.get("bench_status") in (None, "ok") else [
        str(r["bench_status"]).upper() + (f": {r['bench_error']}" if r.get("bench_error") else "")]
    return "; ".join(notes + (["noisy"] if r.get("noisy") else []))


def _notes(rows: list[dict[str, Any]], bench: bool, predict: bool) -> list[str]:
    notes = [f"vs ref: ratio to {rows[0]['model']}, the first model."] if len(rows) > 1 else []
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
        name, source, threads = rows[0].get("device_name"), rows[0].get("profile"), rows[0].get("threads")
        at = f"{threads} thread{'' if threads == 1 else 's'}" if threads else ""
        if f"({source})" in str(name):  # "H100 (datasheet)" says it already
            where = f"{name} ({at})" if at else name
        else:
            where = f"{name} ({source}{', ' + at if at else ''})"
        notes.append(f"Predicted: {rows[0].get('prediction', 'calibrated')} latency on {where} from per-op costs, "
                     f"without running the models (see `cnnprof roofline`).")
        notes += [f"{r['model']}: predicted time from " + ", ".join(
            f"{100 * v:.0f}% {k}" for k, v in r["time_sources"].items() if v) + "."
            for r in rows if r.get("time_sources")] + [SOURCES_NOTE]
    return notes


def _csv_row(r: dict[str, Any]) -> dict[str, Any]:
    """One model flat: uncounted ops as 'op:n ...', the ratio interval as three columns."""
    flat = {k: v for k, v in r.items() if not isinstance(v, dict) and k != "latency_ratio_interval"}
    flat["uncounted_ops"] = " ".join(f"{op}:{n}" for op, n in (r.get("uncounted_ops") or {}).items())
    if r.get("latency_ratio_interval"):
        flat.update(latency_ratio_low=r["latency_ratio_interval"]["low"],
                    latency_ratio_high=r["latency_ratio_interval"]["high"],
                    latency_ratio_measurable=r["latency_ratio_interval"]["measurable"])
    return flat


# ----------------------------------------------------------------------------- rows from results


def compare_rows(counts: list[tuple[Any, int]], convention: str = "macc", predictions: list[Any] | None = None,
                 bench: tuple[list[Any], list[Any]] | None = None, device: str = "cpu") -> list[dict[str, Any]]:
    """The rows of compare_report from results: counts are (FlopCount, params) per model, the first the
    reference; predictions a LatencyPrediction per model; bench the (BenchResults, RatioStats) of an
    interleaved run on `device`."""
    rows = [_count_row(fc, params, convention) for fc, params in counts]
    for row, p in zip(rows, predictions or []):
        row.update(predicted_ms=1e3 * p.best_s(), roofline_ms=1e3 * p.roofline_s,
                   prediction=getattr(p, "latency_model", "") or ("calibrated" if p.calibrated else "roofline"),
                   device_name=p.device_name, profile=p.source, threads=p.threads, time_sources=time_sources(p))
    if bench is not None:
        add_bench(rows, *bench, device)
    add_ratios(rows)  # last, as the CLI adds them: the JSON keys keep its order
    return rows


def _count_row(fc: Any, params: int, convention: str) -> dict[str, Any]:
    row = {"model": fc.model, "params": params, "flops": fc.flops(convention), "macs": fc.macs, "acts": fc.acts,
           "convention": convention, "scope": fc.scope, "input_shape": list(fc.input_shape),
           "macs_per_param": fc.macs / params if params else None, "uncounted_ops": dict(fc.uncounted),
           "method": fc.method}
    if getattr(fc, "mode", "infer") == "train":  # the MACs above are the whole step's
        row.update(mode="train", **phase_flops(fc, convention))
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's params, FLOPs, MACs (and predicted latency) as a ratio to the first row's."""
    if not rows:
        return
    ref = rows[0]
    for row in rows:
        for key in ("params", "flops", "macs"):
            row[f"{key}_ratio"] = row[key] / ref[key] if ref[key] else None
        if "predicted_ms" in row:
            row["predicted_ratio"] = row["predicted_ms"] / ref["predicted_ms"] if ref.get("predicted_ms") else None


def add_bench(rows: list[dict[str, Any]], results: list[Any], ratios: list[Any], device: str = "cpu") -> None:
    """Latency, throughput, ratio interval, status and noisy flag of each model's BenchResult and RatioStat."""
    for row, r, q in zip(rows, results, ratios):
        row.update(device=device, latency_ms=r.median_ms, throughput=r.throughput, bench_status=r.status,
                   bench_error=r.error, noisy=r.noisy, rounds=r.rounds,
                   latency_ratio_interval=None if q is None else {"low": q.low, "high": q.high,
                                                                 "measurable": q.measurable})
        row["latency_ratio"] = (q.median if q is not None else 1.0 if r is results[0] and r.median_ms else None)
        row["throughput_ratio"] = (row["throughput"] / rows[0]["throughput"]
                                   if row["throughput"] and rows[0].get("throughput") else None)


def with_overrides(report, by_label: Mapping[str, Mapping[str, Any]]):
    """Add each row's effective overrides (`overrides`, by row label) as a field after `model`: a mapping in
    the JSON rows, key=value,... text in the CSV rows."""
    tables, json_rows, csv_rows = report
    for rows, as_text in ((json_rows, False), (csv_rows, True)):
        for i, row in enumerate(rows):
            if row.get("model") in by_label and "overrides" not in row:
                o = by_label[row["model"]]
                value = ",".join(f"{k}={v}" for k, v in o.items()) if as_text else dict(o)
                items = list(row.items())
                rows[i] = dict(items[:1] + [("overrides", value)] + items[1:])
    return tables, json_rows, csv_rows
