"""Peak memory and wall time of counting on the meta device at a size that could never run for real.

`cnnprof flops resnet152 --batch-size 64 --resolution 1024` (~200 GB of fp32 activations if executed)
against `python -c "import torch"` alone. Peak resident memory from the child's rusage (Linux).
Run: .venv/bin/python benchmarks/meta_memory.py
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def measure(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in MiB) of one child process, measured from a fresh helper process."""
    helper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
              f"subprocess.run({cmd!r}, check=True, stdout=subprocess.DEVNULL); "
              "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", helper], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1]) // 1024


def main() -> None:
    cnnprof = str(Path(sys.executable).parent / "cnnprof")
    rows = [('python -c "import torch"', [sys.executable, "-c", "import torch"]),
            ("cnnprof flops resnet152 --batch-size 64 --resolution 1024",
             [cnnprof, "flops", "resnet152", "--batch-size", "64", "--resolution", "1024"])]
    print("| command | wall time (s) | peak RSS (MiB) |")
    print("|---|---:|---:|")
    for label, cmd in rows:
        wall, rss = measure(cmd)
        print(f"| `{label}` | {wall:.1f} | {rss} |")


if __name__ == "__main__":
    main()
