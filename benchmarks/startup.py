"""Start-up time: `cnnprof --help`, `cnnprof list` and a first count against `python -c "import torch"`.

Each command runs `--runs` times in a fresh process; the median wall time is reported. Also checks
that neither `--help` nor `list` imports torch, and that params/flops do not import torch._dynamo
(goal, issue 7: `cnnprof flops resnet50` within 1.25x of `import torch`). Prints a Markdown table.
Run: .venv/bin/python benchmarks/startup.py [--runs 10]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def median_wall(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, check=True, capture_output=True)  # warm the file cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    cnnprof = str(BIN / "cnnprof")
    rows = [
        ('python -c "import torch"', [sys.executable, "-c", "import torch"]),
        ("cnnprof --help", [cnnprof, "--help"]),
        ("cnnprof list", [cnnprof, "list"]),
        ("cnnprof list --format json", [cnnprof, "list", "--format", "json"]),
        ("cnnprof params resnet50", [cnnprof, "params", "resnet50"]),
        ("cnnprof flops resnet50", [cnnprof, "flops", "resnet50"]),
    ]
    probe = ("import sys; from typer.testing import CliRunner; from cnnprof.cli import app; "
             "CliRunner().invoke(app, ['list']); CliRunner().invoke(app, ['--help']); print('torch' in sys.modules)")
    imports_torch = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    probe = ("import sys; from typer.testing import CliRunner; from cnnprof.cli import app; "
             "CliRunner().invoke(app, ['flops', 'resnet50']); CliRunner().invoke(app, ['params', 'resnet50']); "
             "print('torch._dynamo' in sys.modules)")
    imports_dynamo = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    base = None
    print("| command | median wall time (ms) | vs import torch |")
    print("|---|---:|---:|")
    for label, cmd in rows:
        t = median_wall(cmd, args.runs)
        base = base or t
        print(f"| `{label}` | {1e3 * t:.0f} | {100 * t / base:.0f}% |")
    print(f"\ntorch imported by `cnnprof --help` / `cnnprof list`: {imports_torch}; "
          f"torch._dynamo imported by `cnnprof flops/params resnet50`: {imports_dynamo}")


if __name__ == "__main__":
    main()
