"""Counting speed: cnnprof (dispatch-level, meta device) vs fvcore's FlopCountAnalysis, same process.

For every zoo model at 224x224, batch 1 and batch 8: time cnnprof.count_flops on a meta-device model and
fvcore's FlopCountAnalysis(...).total() on a real CPU model (both models built beforehand, outside the
timing). Each count is repeated `--repeat` times and the median kept. Prints a Markdown table.
Run: .venv/bin/python benchmarks/flops_speed.py [--repeat 3] [--models resnet50,mobilenet_v2]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import cnnprof
from cnnprof.models.zoo import zoo_names


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", default=",".join(zoo_names()))
    parser.add_argument("--batch-sizes", default="1,8")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

    torch.set_grad_enabled(False)
    # Warm both code paths once (imports, lazy meta registrations) so that no model pays for them.
    cnnprof.count_flops("resnet18")
    FlopCountAnalysis(cnnprof.build_model("resnet18"), torch.zeros(1, 3, 224, 224)).unsupported_ops_warnings(False).total()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    totals = {b: [0.0, 0.0] for b in sizes}
    print("| model | " + " | ".join(f"cnnprof b{b} (ms) | fvcore b{b} (ms) | speed-up b{b}" for b in sizes) + " |")
    print("|---|" + "---:|" * (3 * len(sizes)))
    for name in args.models.split(","):
        meta = cnnprof.build_model(name, device="meta")
        cpu = cnnprof.build_model(name)
        cells = []
        for b in sizes:
            shape = (b, 3, 224, 224)
            ours = median_time(lambda: cnnprof.count_flops(meta, shape), args.repeat)
            x = torch.zeros(shape)

            def fv():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fca = FlopCountAnalysis(cpu, x)
                    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                    fca.total()

            theirs = median_time(fv, args.repeat)
            totals[b][0] += ours
            totals[b][1] += theirs
            cells += [f"{1e3 * ours:.0f}", f"{1e3 * theirs:.0f}", f"{theirs / ours:.1f}×"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    cells = []
    for b in sizes:
        ours, theirs = totals[b]
        cells += [f"**{1e3 * ours:.0f}**", f"**{1e3 * theirs:.0f}**", f"**{theirs / ours:.1f}×**"]
    print("| **whole zoo** | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
