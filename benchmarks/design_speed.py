"""Design commands' speed: `cnnprof sweep` over a 4x4 MobileNet v1 grid vs `import torch` (goal: < 3x),
and trials per second of `cnnprof search` on the RegNet space for 1 and N worker processes and for the
journal-file and SQLite storages.

Each command runs in a fresh process; wall times are medians over --runs. Prints Markdown tables.
Run: .venv/bin/python benchmarks/design_speed.py [--runs 3] [--trials 200]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
GRID = ["--set", "width_mult=1,0.75,0.5,0.25", "--set", "resolution=224,192,160,128"]


def wall(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, out


def median_wall(cmd: list[str], runs: int) -> float:
    wall(cmd)  # warm the file cache
    return statistics.median(wall(cmd)[0] for _ in range(runs))


def search_rate(trials: int, workers: int, storage: str | None, tmp: Path) -> tuple[float, float]:
    """(trials/s as the search reports it, whole-command wall time) for one fresh study."""
    out_dir = tmp / f"s{workers}{'db' if storage else ''}"
    cmd = [str(BIN / "cnnprof"), "search", "--space", "regnet", "--trials", str(trials), "--constraint", "macs<=400M",
           "--maximize", "macs", "--minimize", "params", "--seed", "0", "--workers", str(workers),
           "--out", str(out_dir), "--format", "json"]
    if storage:
        cmd += ["--storage", storage.format(dir=out_dir)]
    t, out = wall(cmd)
    rows = json.loads(out)
    assert len(rows) == trials
    return trials / t, t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    cnnprof = str(BIN / "cnnprof")
    torch_t = median_wall([sys.executable, "-c", "import torch"], args.runs)
    sweep_t = median_wall([cnnprof, "sweep", "mobilenet_v1", *GRID, "--format", "json"], args.runs)
    print("| command | median wall time (s) | vs import torch |")
    print("|---|---:|---:|")
    print(f'| `python -c "import torch"` | {torch_t:.2f} | 1.0× |')
    print(f"| `cnnprof sweep mobilenet_v1` 4×4 grid (16 models) | {sweep_t:.2f} | {sweep_t / torch_t:.1f}× |")
    print()
    cores = os.cpu_count() or 1
    print(f"`cnnprof search --space regnet --trials {args.trials} --constraint macs<=400M --maximize macs "
          f"--minimize params --seed 0` (whole command, fresh study):\n")
    print("| workers | storage | trials/s | wall time (s) |")
    print("|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for workers, storage, label in [(1, None, "SQLite (default)"), (cores, None, "SQLite (default)"),
                                        (cores, "{dir}/study.log", "journal file")]:
            rate, t = search_rate(args.trials, workers, storage, Path(tmp))
            print(f"| {workers} | {label} | {rate:.1f} | {t:.1f} |")


if __name__ == "__main__":
    main()
