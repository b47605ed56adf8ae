"""Counting a model already built on the CPU vs the same model built on meta: time and peak memory.

Goal (issue 7): counting a built CPU model costs at most 1.5x counting it built on meta, and peak RSS grows by
less than 10% of the model's size (it is counted through meta stand-ins for its weights, never copied).
Each (model, build) runs in a fresh process: one warm-up count, then the median of `--repeat` counts.
RSS growth = peak RSS while counting (VmHWM, reset after the warm-up count through /proc/self/clear_refs)
minus the RSS before (Linux only).
Run: .venv/bin/python benchmarks/built_model.py [--repeat 5] [--models vgg16,resnet50,mobilenet_v2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, statistics, sys, time
import torch, cnnprof
name, device, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = cnnprof.build_model(name, device=device)
size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024
cnnprof.count_flops(model, (1, 3, 224, 224))  # warm-up: first-call costs (lazy imports) are not compared
open("/proc/self/clear_refs", "w").write("5")  # resets the peak RSS (VmHWM) to the current RSS
rss_before = status("VmRSS")
times = []
for _ in range(repeat):
    t0 = time.perf_counter()
    fc = cnnprof.count_flops(model, (1, 3, 224, 224))
    times.append(time.perf_counter() - t0)
peak = status("VmHWM")
print(json.dumps({"s": statistics.median(times), "macs": fc.macs, "size": size,
                  "growth": max(0, peak - rss_before)}))
"""


def run(name: str, device: str, repeat: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, name, device, str(repeat)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", default="vgg16,resnet50,mobilenet_v2")
    args = parser.parse_args()
    print("| model | model size (MiB) | count, built on meta (ms) | count, built on CPU (ms) | ratio (goal ≤ 1.5) "
          "| peak RSS growth, CPU model (MiB) | growth / size (goal < 10%) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        meta, cpu = run(name, "meta", args.repeat), run(name, "cpu", args.repeat)
        assert meta["macs"] == cpu["macs"], name
        print(f"| {name} | {cpu['size'] / 2**20:.0f} | {1e3 * meta['s']:.1f} | {1e3 * cpu['s']:.1f} | "
              f"{cpu['s'] / meta['s']:.2f} | {cpu['growth'] / 2**20:.1f} | {100 * cpu['growth'] / cpu['size']:.1f}% |")


if __name__ == "__main__":
    main()
