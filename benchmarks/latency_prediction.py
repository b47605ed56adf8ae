"""How well params, MACs, acts, memory traffic and cnnprof's latency predictions track measured latency.

For each thread count (CPU) and batch size: calibrate the device once (peaks + single-layer micro-benchmarks of a
synthetic grid, `cnnprof.predict.latency.calibrate`), then for every zoo model
  1. time each distinct layer of the model alone on this device, once, into the layer table
     (`cnnprof.predict.lut`: what `cnnprof roofline` / `compare --predict` do on first use);
  2. measure the model's forward latency (median; wall clock, or the thread's CPU clock with --clock thread);
  3. predict it from its structure: roofline; calibrated per-op-type model; layer table (sum of the measured
     layers + the calibrated module / view overheads); layer table + a model-level correction
     (measured ~ a * layers + b * overheads) fitted leave-one-model-out, on the OTHER models' timings only.
Every measurement runs with glibc's malloc keeping freed memory (cnnprof.timing.timer.keep_freed_memory), as
`cnnprof bench` and the layer table measure. Neither the calibration nor the layer table ever sees a whole-model
timing, so every prediction but the last is held out by construction, and the last is held out by leaving the
model out of its fit.
Reports per setting: every model's errors, the share of its predicted time that came from measured layers,
Spearman rank correlation of each metric with measured latency, median |error| and median signed error, and the
issue-14 acceptance (median |error| <= 10%, Spearman above MACs' and bytes', median signed error within ±5%).
Prints Markdown.

Run (the full issue-14 run, CPU, quiet machine; roughly 30-45 min on 2 cores):
    .venv/bin/python benchmarks/latency_prediction.py --threads 1,2 --batches 1,8 --devices cpu
Smaller: --quick (5 models, batch 1, 1 thread), --models a,b,c; on a busy machine at 1 thread --clock thread.
On a machine whose speed drifts over minutes (a shared VM), --fresh-layers times each model's layers into a table
of its own between two timings of the model, so drift between a shared layer's timing and the model's is not
counted as prediction error.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

QUICK_MODELS = ["resnet18", "resnet50", "mobilenet_v2", "shufflenet_v2_x1_0", "regnet_x_400mf"]
PREDICTIONS = (("roofline", "roofline"), ("calibrated", "calibrated model"), ("table", "layer table"),
               ("corrected", "layer table + LOO correction"))
METRICS = (("params", "params"), ("macs", "MACs"), ("acts", "acts"), ("bytes", "memory traffic"))


def ranks(xs: list[float]) -> list[float]:
    """Average ranks (ties share the mean rank), 1-based."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks."""
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return num / den if den else float("nan")


def model_latency(source, shape, device: str, min_time: float, clock: str) -> tuple[float, bool] | None:
    """(median seconds per forward pass, noisy), or None when it failed; `clock` thread: the thread's CPU time."""
    from cnnprof.predict.device import time_call
    from cnnprof.timing.runtime import benchmark

    if clock == "thread":
        net, x = source.build("cpu"), torch.randn(shape)
        with torch.inference_mode():
            return time_call(lambda: net(x), "cpu", min_time=min_time, min_runs=3), False
    r = benchmark(source, shape, device=device, warmup=0.3, min_time=min_time, min_runs=3)
    return (r.median_s, r.noisy) if r.status == "ok" else None


def measure_model_row(name: str, batch: int, device: str, profile, min_time: float, clock: str,
                      fresh: bool = False) -> dict | None:
    """One model at one batch size: its layers into the table, its measured latency, every prediction. `fresh`:
    the model's layers go into a table of its own, measured between two timings of the model (their mean is the
    measured latency), so a machine whose speed drifts over minutes does not count as the model's error."""
    import dataclasses

    from cnnprof.cli.models_arg import parse_model_arg, resolve_arg
    from cnnprof.counting.flops import count_flops
    from cnnprof.counting.params import count_params
    from cnnprof.predict.latency import predict_latency
    from cnnprof.predict.lut import LayerTable, measure_model

    source = resolve_arg(parse_model_arg(name))  # MODEL@key=value as on the command line (timm:create_model@...)
    shape = (batch, *source.default_input_shape[1:])
    if fresh:
        profile = dataclasses.replace(profile, layers=LayerTable(device, "float32", profile.threads))
    before = model_latency(source, shape, device, min_time, clock) if fresh else (0.0, False)
    measure_model(profile.layers, source, (shape,), view_overhead_s=profile.view_overhead_s)
    timed = model_latency(source, shape, device, min_time, clock)
    if timed is None or before is None:
        return None
    if fresh:
        timed = ((before[0] + timed[0]) / 2, before[1] or timed[1])
    pred = predict_latency(source, shape, profile, "float32")
    sources = pred.time_sources()
    fc = count_flops(source, shape)
    return {"model": source.label, "measured": timed[0], "noisy": timed[1], "macs": fc.macs, "acts": fc.acts,
            "params": count_params(source.build("meta")).total, "bytes": pred.memory.bytes,
            "roofline": pred.roofline_s, "calibrated": pred.calibrated_s, "table": pred.predicted_s,
            "layers_part": pred.predicted_s - sources["overhead"], "overhead_part": sources["overhead"],
            "measured_share": sources["measured"] / pred.predicted_s, "table_layers": len(profile.layers.times),
            "module_overhead": profile.layers.module_overhead_s}


def add_loo_correction(rows: list[dict]) -> None:
    """`corrected`: the layer-table prediction scaled by a model-level fit on the other models only."""
    from cnnprof.predict.latency import fit_correction

    for i, r in enumerate(rows):
        a, b = fit_correction([(o["layers_part"], o["overhead_part"], o["measured"])
                               for j, o in enumerate(rows) if j != i])
        r["corrected"] = a * r["layers_part"] + b * r["overhead_part"]


def errors(rows: list[dict], key: str) -> list[float]:
    return [r[key] / r["measured"] - 1 for r in rows]


def model_table(rows: list[dict]) -> list[str]:
    out = ["| model | measured (ms) | " + " | ".join(f"{label} (ms) | error" for _, label in PREDICTIONS)
           + " | from measured layers | MACs | bytes |",
           "|---|---:|" + "---:|---:|" * len(PREDICTIONS) + "---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["measured"]):
        cells = " | ".join(f"{1e3 * r[k]:.2f} | {100 * (r[k] / r['measured'] - 1):+.0f}%" for k, _ in PREDICTIONS)
        out.append(f"| {r['model']}{' (noisy)' if r['noisy'] else ''} | {1e3 * r['measured']:.2f} | {cells} | "
                   f"{100 * r['measured_share']:.0f}% | {r['macs'] / 1e9:.2f} G | {r['bytes'] / 1e6:.1f} MB |")
    return out


def summary_table(rows: list[dict]) -> list[str]:
    measured = [r["measured"] for r in rows]
    out = ["", "| metric | Spearman ρ with measured latency | median abs error | median signed error | worst abs error |",
           "|---|---:|---:|---:|---:|"]
    for key, label in METRICS:
        out.append(f"| {label} | {spearman([r[key] for r in rows], measured):.3f} | - | - | - |")
    for key, label in PREDICTIONS:
        e = errors(rows, key)
        out.append(f"| {label} | {spearman([r[key] for r in rows], measured):.3f} | "
                   f"{100 * statistics.median(abs(x) for x in e):.1f}% | {100 * statistics.median(e):+.1f}% | "
                   f"{100 * max(abs(x) for x in e):.1f}% |")
    return out


def acceptance(rows: list[dict]) -> list[str]:
    """Issue 14: median |error| <= 10%, Spearman above MACs' and bytes', median signed error within ±5%."""
    measured = [r["measured"] for r in rows]
    floor = max(spearman([r[k] for r in rows], measured) for k in ("macs", "bytes"))
    out = [""]
    for key, label in PREDICTIONS[2:]:
        e = errors(rows, key)
        med, signed = statistics.median(abs(x) for x in e), statistics.median(e)
        rho = spearman([r[key] for r in rows], measured)
        ok = med <= 0.10 and rho > floor and abs(signed) <= 0.05
        out.append(f"- Acceptance for the {label} (median |error| ≤ 10%, Spearman above MACs' and bytes', median "
                   f"signed error within ±5%): {'met' if ok else 'NOT met'} (median |error| {100 * med:.1f}%, "
                   f"Spearman {rho:.3f} vs {floor:.3f}, median signed {100 * signed:+.1f}%).")
    share = statistics.median(r["measured_share"] for r in rows)
    out.append(f"- Median share of the predicted time from measured layers: {100 * share:.0f}%.")
    return out + [""]


def section(device: str, threads: int | None, batches: list[int], models: list[str], min_time: float,
            clock: str, fresh: bool = False) -> list[str]:
    """Calibrate, fill the layer table, measure and predict every model at every batch size, at `threads`."""
    import dataclasses

    from cnnprof.predict.latency import calibrate
    from cnnprof.predict.lut import LayerTable

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    profile = calibrate(device, "float32")  # and a fresh layer table of this run only (not the user's cache)
    profile = dataclasses.replace(profile, layers=LayerTable(device, "float32", profile.threads))
    n = profile.threads
    out = [f"### {device}: {profile.name}, torch {profile.torch_version}, {n} thread{'' if n == 1 else 's'}, "
           f"clock {clock}{', each model with a fresh layer table' if fresh else ''}\n",
           f"Calibration took {profile.seconds:.1f} s: peak {profile.peak('float32') / 1e9:,.1f} GFLOP/s, bandwidth "
           f"{profile.bandwidth / 1e9:,.1f} GB/s, per-op overhead {profile.op_overhead_s * 1e6:.1f} µs, per-module "
           f"{profile.module_overhead_s * 1e6:.2f} µs.\n"]
    timed_layers, overheads = 0, []
    for b in batches:
        rows = []
        for name in models:
            print(f"  {device} {n} threads batch {b}: {name}", file=sys.stderr, flush=True)
            row = measure_model_row(name, b, device, profile, min_time, clock, fresh)
            if row is None:
                out.append(f"- {name} at batch {b}: the timing failed")
            else:
                rows.append(row)
                timed_layers, overheads = row["table_layers"], overheads + [row["module_overhead"]]
        if len(rows) < 3:
            continue
        add_loo_correction(rows)
        out += [f"#### {device}, {n} thread{'' if n == 1 else 's'}, batch {b}, float32 ({len(rows)} models)\n",
                *model_table(rows), *summary_table(rows), *acceptance(rows)]
    overheads = [o for o in overheads if o is not None]
    overhead = "-" if not overheads else f"{statistics.median(overheads) * 1e6:.2f} µs"
    layers = "each model's layers timed afresh" if fresh else f"{timed_layers} layers in the table"
    out.append(f"_Section took {time.perf_counter() - t0:.0f} s ({layers}; a module call inside a network: "
               f"{overhead}{' (median over the models)' if fresh else ''})._\n")
    return out


def device_sections(device: str, args: argparse.Namespace, threads: list, models: list[str]) -> list[str]:
    """Every thread count's section of one device."""
    default = [1] if args.quick else ([1, 8] if device == "cpu" else [1, 64])
    batches = [int(b) for b in args.batches.split(",")] if args.batches else default
    out = []
    for t in (threads if device == "cpu" else [None]):
        out += section(device, t, batches, models, 0.3 if args.quick else args.min_time,
                       args.clock if device == "cpu" else "wall", args.fresh_layers)
    return out


def main() -> None:
    from cnnprof.models.zoo import zoo_names
    from cnnprof.timing.timer import keep_freed_memory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{', '.join(QUICK_MODELS)}; batch 1; 1 thread")
    parser.add_argument("--models", default=None, help="comma-separated models (default: the whole zoo)")
    parser.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, plus cuda when available)")
    parser.add_argument("--threads", default=None, help="CPU thread counts, e.g. 1,2 (default: torch's)")
    parser.add_argument("--batches", default=None, help="CPU batch sizes (default 1,8; CUDA 1,64)")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per model and batch")
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall",
                        help="thread: CPU time of the thread, for layers and models alike (needs --threads 1); "
                             "checks the model on a busy machine, where wall time counts other processes")
    parser.add_argument("--fresh-layers", action="store_true",
                        help="time each model's layers afresh, between two timings of the model, instead of "
                             "reusing the layers other models share: on a machine whose speed drifts over minutes")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")] if args.threads else ([1] if args.quick else [None])
    if args.clock == "thread":
        from cnnprof.timing import timer

        if threads != [1]:
            parser.error("--clock thread needs --threads 1")
        timer.CLOCK[0] = time.thread_time  # the CPU clock of every measurement (calibration, layers, models)
    models = args.models.split(",") if args.models else (QUICK_MODELS if args.quick else zoo_names())
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = []
    keep_freed_memory()  # as every cnnprof timing does (the first one would; here before anything is allocated)
    for device in devices:
        out += device_sections(device, args, threads, models)
    if "cuda" not in devices:
        out.append("CUDA: no GPU on this machine, not measured (the script runs batch 1 and 64 on CUDA when one is "
                   "present).\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
