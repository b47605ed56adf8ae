"""How well params, MACs, acts, memory traffic and cnnprof's two latency predictions track measured latency.

On this machine: calibrate the device once (peaks + single-layer micro-benchmarks of a synthetic grid,
`cnnprof.predict.latency.calibrate`), then measure every zoo model's forward latency (median,
cnnprof.benchmark protocol) at batch 1 and a larger batch, and predict it from the model's structure.
The calibration never sees a zoo model, so the roofline and calibrated predictions are leave-one-model-out
by construction. A third column adds a model-level correction (measured ~ a * conv/linear time + b * rest,
`cnnprof.predict.latency.fit_correction`) fitted, for each model, on the OTHER models' timings only. Reports Spearman rank correlation of measured latency with each
metric and the median / worst absolute error of both predictions. Prints Markdown.
CPU always; CUDA (batch 1 and 64) too when a GPU is present.
Run: .venv/bin/python benchmarks/latency_prediction.py [--quick] [--threads N] [--devices cpu,cuda]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

QUICK_MODELS = ["resnet18", "resnet50", "mobilenet_v2", "shufflenet_v2_x1_0", "regnet_x_400mf"]


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


def thread_time_latency(source, shape, min_time: float) -> float:
    """Median CPU time of the calling thread per forward pass (single-threaded runs on a shared machine)."""
    from cnnprof.predict.device import time_call

    net = source.build("cpu")
    x = torch.randn(shape)
    with torch.inference_mode():
        return time_call(lambda: net(x), "cpu", min_time=min_time, min_runs=3)


def run(device: str, batches: list[int], models: list[str], min_time: float, clock: str = "wall") -> list[str]:
    from cnnprof.counting.flops import count_flops
    from cnnprof.predict.latency import calibrate, fit_correction, predict_latency, split_calibrated
    from cnnprof.counting.params import count_params
    from cnnprof.timing.runtime import benchmark
    from cnnprof.models.spec import resolve

    t0 = time.perf_counter()
    profile = calibrate(device, "float32")
    out = [f"### {device}: {profile.name}, torch {profile.torch_version}, {profile.threads} thread{'' if profile.threads == 1 else 's'}\n",
           f"Calibration took {profile.seconds:.1f} s: peak {profile.peak('float32') / 1e9:,.1f} GFLOP/s (float32 "
           f"GEMM), bandwidth {profile.bandwidth / 1e9:,.1f} GB/s, ridge {profile.ridge():.1f} FLOP/B, per-op overhead "
           f"{profile.op_overhead_s * 1e6:.1f} µs, per-module {profile.module_overhead_s * 1e6:.2f} µs; "
           f"{sum(f.samples for f in profile.calibration.values())} single-layer micro-benchmarks in "
           f"{len(profile.calibration)} op types.\n"]
    for b in batches:
        rows = []
        for name in models:
            print(f"  {device} batch {b}: {name}", file=sys.stderr, flush=True)
            source = resolve(name)
            shape = (b, *source.default_input_shape[1:])
            if clock == "thread":
                measured, noisy = thread_time_latency(source, shape, min_time), False
            else:
                r = benchmark(source, shape, device=device, warmup=0.3, min_time=min_time, min_runs=3)
                if r.status != "ok":
                    out.append(f"- {name} at batch {b}: {r.status} {r.error or ''}")
                    continue
                measured, noisy = r.median_s, r.noisy
            pred = predict_latency(source, shape, profile, "float32")
            compute, rest = split_calibrated(pred)
            fc = count_flops(source, shape)
            rows.append({"model": source.label, "measured": measured, "params": count_params(source.build("meta")).total,
                         "macs": fc.macs, "acts": fc.acts, "bytes": pred.memory.bytes, "roofline": pred.roofline_s,
                         "calibrated": pred.calibrated_s, "noisy": noisy, "compute": compute, "rest": rest})
        if len(rows) < 3:
            continue
        for i, r in enumerate(rows):  # leave-one-model-out: the correction for r never sees r's timing
            a, b_ = fit_correction([(o["compute"], o["rest"], o["measured"]) for j, o in enumerate(rows) if j != i])
            r["corrected"] = a * r["compute"] + b_ * r["rest"]
        out += [f"#### {device}, batch {b}, float32 ({len(rows)} models)\n",
                "| model | measured (ms) | roofline (ms) | error | calibrated (ms) | error | + LOO correction (ms) "
                "| error | MACs | acts | bytes |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(rows, key=lambda r: r["measured"]):
            e1, e2, e3 = (r[k] / r["measured"] - 1 for k in ("roofline", "calibrated", "corrected"))
            out.append(f"| {r['model']}{' (noisy)' if r['noisy'] else ''} | {1e3 * r['measured']:.2f} | "
                       f"{1e3 * r['roofline']:.2f} | {100 * e1:+.0f}% | {1e3 * r['calibrated']:.2f} | {100 * e2:+.0f}% | "
                       f"{1e3 * r['corrected']:.2f} | {100 * e3:+.0f}% | "
                       f"{r['macs'] / 1e9:.2f} G | {r['acts'] / 1e6:.2f} M | {r['bytes'] / 1e6:.1f} MB |")
        measured = [r["measured"] for r in rows]
        out += ["", "| metric | Spearman ρ with measured latency | median abs error | worst abs error |",
                "|---|---:|---:|---:|"]
        for key, label in [("params", "params"), ("macs", "MACs"), ("acts", "acts"), ("bytes", "memory traffic"),
                           ("roofline", "roofline prediction"), ("calibrated", "calibrated prediction"),
                           ("corrected", "calibrated + leave-one-out correction")]:
            rho = spearman([r[key] for r in rows], measured)
            if key in ("roofline", "calibrated", "corrected"):
                errs = [abs(r[key] / r["measured"] - 1) for r in rows]
                out.append(f"| {label} | {rho:.3f} | {100 * statistics.median(errs):.1f}% | {100 * max(errs):.1f}% |")
            else:
                out.append(f"| {label} | {rho:.3f} | - | - |")
        out.append("")
        for key, label in (("calibrated", "calibrated (micro-benchmarks only)"),
                           ("corrected", "calibrated + leave-one-model-out correction")):
            err = statistics.median(abs(r[key] / r["measured"] - 1) for r in rows)
            beats = spearman([r[key] for r in rows], measured) > spearman([r["macs"] for r in rows], measured)
            out.append(f"- Acceptance for {label} (median abs error ≤ 20%, rank correlation above MACs'): "
                       f"{'met' if err <= 0.20 and beats else 'NOT met'} (median {100 * err:.1f}%, "
                       f"{'beats' if beats else 'does not beat'} MACs).")
        out.append("")
    out.append(f"_{device} section took {time.perf_counter() - t0:.0f} s._\n")
    return out


def main() -> None:
    from cnnprof.models.zoo import zoo_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_MODELS)}, batch 1, shorter timing")
    parser.add_argument("--models", default=None, help="comma-separated models (default: the whole zoo)")
    parser.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, plus cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--cpu-batch", type=int, default=8, help="the larger CPU batch size")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per model and batch")
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall",
                        help="thread: CPU time of the thread for calibration and models alike (needs --threads 1); "
                             "checks the model on a busy machine, where wall time counts other processes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread":
        import time as _time

        from cnnprof.timing import timer

        if torch.get_num_threads() != 1:
            parser.error("--clock thread needs --threads 1")
        timer.CLOCK[0] = _time.thread_time  # the CPU clock of every measurement (calibration and models alike)
    models = args.models.split(",") if args.models else (QUICK_MODELS if args.quick else zoo_names())
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = []
    for device in devices:
        batches = ([1] if args.quick else [1, args.cpu_batch]) if device == "cpu" else ([1] if args.quick else [1, 64])
        out += run(device, batches, models, 0.3 if args.quick else args.min_time, args.clock if device == "cpu" else "wall")
    if "cuda" not in devices:
        out.append("CUDA: no GPU on this machine, not measured (the script runs batch 1 and 64 on CUDA when one is "
                   "present).\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
