"""Accuracy of cnnprof's CPU timing against torch.utils.benchmark.Timer.blocked_autorange.

In one process, interleaved round by round (the order alternates every round, so that drift of the
machine does not favour one side), for resnet18 and mobilenet_v2 at batch 1 (224x224, CPU):
cnnprof.benchmark's median vs Timer.blocked_autorange's median on the same model and input, both under
inference_mode and with the same thread count. A round counts when both IQRs are below 10% of their
medians; the acceptance target is a gap within 5%. The summary also pools the counted rounds (median
of per-round medians on each side). Prints Markdown tables.
Run: .venv/bin/python benchmarks/timer_accuracy.py [--rounds 5] [--min-time 2]
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch.utils.benchmark import Timer

import cnnprof


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--threads", type=int, default=1, help="both timers use this many threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {name: cnnprof.build_model(name) for name in args.models.split(",")}
    x = torch.randn(1, 3, 224, 224)
    gaps: dict[str, list[float]] = {name: [] for name in models}
    pooled: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in models}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread{'' if torch.get_num_threads() == 1 else 's'}\n")
    print("| round | model | cnnprof median (ms) | cnnprof IQR | Timer median (ms) | Timer IQR | gap | counted |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for rnd in range(1, args.rounds + 1):
        for name, model in models.items():
            def run_ours():
                return cnnprof.benchmark(model, tuple(x.shape), warmup=0.5, min_time=args.min_time, label=name)

            def run_theirs():
                with torch.inference_mode():
                    # Timer defaults to one thread; give it the same thread count cnnprof uses.
                    timer = Timer("model(x)", globals={"model": model, "x": x}, num_threads=torch.get_num_threads())
                    return timer.blocked_autorange(min_run_time=args.min_time)

            if rnd % 2:
                ours, m = run_ours(), run_theirs()
            else:
                m, ours = run_theirs(), run_ours()
            ours_iqr, theirs_iqr = ours.iqr_s / ours.median_s, m.iqr / m.median
            gap = ours.median_s / m.median - 1
            counted = ours_iqr < 0.1 and theirs_iqr < 0.1
            if counted:
                gaps[name].append(gap)
                pooled[name][0].append(ours.median_s)
                pooled[name][1].append(m.median)
            print(f"| {rnd} | {name} | {ours.median_ms:.2f} | {100 * ours_iqr:.1f}% | {1e3 * m.median:.2f} | "
                  f"{100 * theirs_iqr:.1f}% | {100 * gap:+.1f}% | {'yes' if counted else 'no (noisy)'} |", flush=True)
    print("\n| model | rounds counted | rounds within 5% | median per-round gap | largest gap | pooled gap |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, g in gaps.items():
        if g:
            worst = max(g, key=abs)
            within = sum(abs(v) <= 0.05 for v in g)
            ours_p, theirs_p = (statistics.median(v) for v in pooled[name])
            print(f"| {name} | {len(g)} | {within} | {100 * statistics.median(g):+.1f}% | {100 * worst:+.1f}% | "
                  f"{100 * (ours_p / theirs_p - 1):+.1f}% |")
        else:
            print(f"| {name} | 0 | - | - | - | - |")


if __name__ == "__main__":
    main()
