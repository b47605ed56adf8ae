"""Design commands' speed: `cnnprof sweep` over a 4x4 MobileNet v1 grid vs `import torch` (goal: < 3x),
trials per second of `cnnprof search` on the RegNet space by worker processes and storage (goal: 10,000
trials within macs<=400M in <= 5 minutes on 2 cores), and `search --stats` over the same number of samples
with predicted latency (EDFs of params, MACs, acts and latency).

Each command runs in a fresh process and a fresh study; wall times are of the whole command. Samples rejected
by the constraint (counted, never run; not counted against --trials) are reported beside the trials.
Prints Markdown tables. Run: .venv/bin/python benchmarks/design_speed.py [--runs 3] [--trials 10000]
[--workers 1,2] [--storages journal,sqlite,memory] [--no-sweep] [--no-stats]
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
STORAGES = {"sqlite": ("SQLite", "{dir}/study.db"), "journal": ("journal file (default)", None),
            "memory": ("in memory (library call)", "")}
# The same search as a library call on an in-memory study (what counting costs without storage writes).
IN_MEMORY = """
import json, sys, time
from cnnprof.design.metrics import parse_constraint
from cnnprof.design.search import search
from cnnprof.design.space import load_space
t = time.perf_counter()
r = search(load_space("regnet"), [("params", "minimize"), ("macs", "maximize")], [parse_constraint("macs<=400M")],
           trials=int(sys.argv[1]), seed=0, workers=int(sys.argv[2]))
print(json.dumps({"wall": time.perf_counter() - t, "trials": len(r.trials), "rejected": len(r.rejected),
                  "inside": sum(t.point.macs <= 400e6 for t in r.trials) / len(r.trials)}))
"""
GOAL_S = 300.0


def wall(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, out


def median_wall(cmd: list[str], runs: int) -> float:
    wall(cmd)  # warm the file cache
    return statistics.median(wall(cmd)[0] for _ in range(runs))


def search_cmd(out_dir: Path, trials: int, workers: int, storage: str | None, *extra: str) -> list[str]:
    cmd = [str(BIN / "cnnprof"), "search", "--space", "regnet", "--trials", str(trials), "--seed", "0", "--workers",
           str(workers), "--out", str(out_dir), "--format", "json", *extra]
    return cmd + (["--storage", storage.format(dir=out_dir)] if storage else [])


def search_run(trials: int, workers: int, storage: str | None, tmp: Path) -> dict:
    """One fresh study: wall time, trials returned, samples rejected, share of returned trials in the budget."""
    if storage == "":
        t, out = wall([sys.executable, "-c", IN_MEMORY, str(trials), str(workers)])
        return {**json.loads(out), "wall": t}
    out_dir = tmp / f"s{workers}{'db' if storage else 'j'}"
    t, out = wall(search_cmd(out_dir, trials, workers, storage, "--constraint", "macs<=400M", "--maximize", "macs",
                             "--minimize", "params"))
    rows = json.loads(out)
    stored = json.loads((out_dir / "trials.json").read_text())
    inside = sum(1 for r in rows if r["macs"] is not None and r["macs"] <= 400e6)
    return {"wall": t, "trials": len(rows), "rejected": sum(1 for r in stored if r.get("rejected")),
            "inside": inside / len(rows)}


def stats_run(trials: int, workers: int, tmp: Path) -> tuple[float, str]:
    """`search --stats --predict` (datasheet H100 roofline) over `trials` random samples of the whole space (no
    constraint), with the EDF plot."""
    out_dir = tmp / "stats"
    cmd = search_cmd(out_dir, trials, workers, "{dir}/study.log", "--stats", "--predict", "--device-spec", "h100",
                     "--plot", str(tmp / "edf.png"))
    t, out = wall(cmd)
    metrics = [m for m in ("params", "macs", "acts", "latency") if any(r.get(m if m != "latency" else "latency_ms")
                                                                       is not None for r in json.loads(out))]
    return t, ", ".join(metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=10000)
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}")
    parser.add_argument("--storages", default="journal,sqlite,memory")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--no-stats", action="store_true")
    args = parser.parse_args()
    if not args.no_sweep:
        cnnprof = str(BIN / "cnnprof")
        torch_t = median_wall([sys.executable, "-c", "import torch"], args.runs)
        sweep_t = median_wall([cnnprof, "sweep", "mobilenet_v1", *GRID, "--format", "json"], args.runs)
        print("| command | median wall time (s) | vs import torch |")
        print("|---|---:|---:|")
        print(f'| `python -c "import torch"` | {torch_t:.2f} | 1.0× |')
        print(f"| `cnnprof sweep mobilenet_v1` 4×4 grid (16 models) | {sweep_t:.2f} | {sweep_t / torch_t:.1f}× |")
        print()
    print(f"`cnnprof search --space regnet --trials {args.trials} --constraint macs<=400M --maximize macs "
          f"--minimize params --seed 0` (whole command, fresh study; goal: 10,000 trials in ≤ {GOAL_S:.0f} s, "
          f"i.e. ≥ {10000 / GOAL_S:.1f} trials/s):\n")
    print("| workers | storage | trials | rejected samples | in budget | wall time (s) | trials/s | goal |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    workers = [int(w) for w in dict.fromkeys(args.workers.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        for name in filter(None, args.storages.split(",")):
            label, storage = STORAGES[name]
            for w in workers:
                r = search_run(args.trials, w, storage, Path(tmp))
                goal = "met" if r["trials"] / r["wall"] >= 10000 / GOAL_S else "not met"
                print(f"| {w} | {label} | {r['trials']:,} | {r['rejected']:,} | {100 * r['inside']:.0f}% | "
                      f"{r['wall']:.1f} | {r['trials'] / r['wall']:.1f} | {goal} |", flush=True)
        if not args.no_stats:
            t, metrics = stats_run(args.trials, workers[-1], Path(tmp))
            print(f"\n`cnnprof search --space regnet --stats --trials {args.trials} --seed 0 --predict --device-spec h100 "
                  f"--plot edf.png` ({workers[-1]} workers, journal file; EDFs of {metrics}): {t:.1f} s "
                  f"({args.trials / t:.1f} samples/s).")


if __name__ == "__main__":
    main()
