"""Run every benchmark and write benchmarks/RESULTS.md, headed by the machine they ran on.

Run: make bench   (or .venv/bin/python benchmarks/run_all.py [--quick])
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = [
    ("Start-up time (issues: `--help` and `list` must not import torch; a first count within 1.25x of "
     "`import torch`)", "startup.py", ["--runs", "10"], ["--runs", "3"]),
    ("FLOP counting speed vs fvcore (median of 3 counts per model, 224x224)", "flops_speed.py", ["--repeat", "3"],
     ["--repeat", "1", "--models", "resnet50,mobilenet_v2,vgg16"]),
    ("Meta-device counting at an impossible size", "meta_memory.py", [], []),
    ("Counting a model built on the CPU vs built on meta (issue 7: no copy)", "built_model.py", ["--repeat", "5"],
     ["--repeat", "3"]),
    ("CPU timing accuracy vs torch.utils.benchmark (interleaved, one process)", "timer_accuracy.py",
     ["--rounds", "12", "--min-time", "2"], ["--rounds", "2", "--min-time", "1"]),
    ("Latency prediction: how params, MACs, acts, traffic and cnnprof's predictions (calibrated model, layer "
     "table) track measured latency, leave-one-model-out (issues 8 and 14; CUDA batch 1 and 64 too when a GPU is "
     "present)", "latency_prediction.py", ["--threads", "1,2"], ["--quick"]),
    ("A forward pass vs the sum of its layers, timed alone or in the network's order (issue 14; paired, 1 thread)",
     "layer_context.py", [], ["--models", "resnet18,mobilenet_v2", "--seconds", "2"]),
    ("GPU latency model on timm's published GPU inference tables (issue 14 item 3: fitted on the RTX 3090 table, "
     "held out by model; other GPUs untuned; CPU only, from benchmarks/data/gpu_tables.json.gz)", "gpu_tables.py",
     [], []),
    ("Memory: predicted vs measured peak of inference and a training step, CPU (issue 15)", "memory_prediction.py",
     [], ["--models", "resnet18,mobilenet_v2", "--batch-sizes", "1,8"]),
    ("Design commands: sweep grid vs import torch, search trials/s on the RegNet space", "design_speed.py",
     ["--runs", "3", "--trials", "10000"], ["--runs", "1", "--trials", "200", "--no-stats"]),
]


def machine() -> str:
    import torch

    from cnnprof.timing.settings import cpu_name

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (f"- date: {datetime.date.today()}\n- CPU: {cpu_name()}, {os.cpu_count()} cores, {mem:.0f} GiB RAM\n"
            f"- GPU: {gpu}\n- Python {platform.python_version()}, torch {torch.__version__}, {platform.platform()}\n"
            f"- PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')} "
            f"(when set, every process recompiles its Python imports: start-up times include that)")


def cuda_section(quick: bool) -> list[str]:
    """`cnnprof bench --device cuda` over the zoo when a GPU is present; otherwise say so."""
    import torch

    title = "## `cnnprof bench --device cuda` on the zoo\n"
    if not torch.cuda.is_available():
        return [title, "No CUDA device on this machine: not measured. The CUDA tests in tests/test_runtime.py "
                       "were skipped; run `make bench` on a GPU machine to fill this section.", ""]
    args = ["bench", "--device", "cuda", "--batch-size", "1" if quick else "1,32", "--format", "markdown"]
    if quick:
        args[1:1] = ["resnet50", "mobilenet_v2"]
    out = subprocess.run([str(Path(sys.executable).parent / "cnnprof"), *args], capture_output=True, text=True).stdout
    return [title, f"`cnnprof {' '.join(args)}`\n", out.strip(), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke run")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    parts = ["# Benchmark results\n", "Written by `benchmarks/run_all.py` (`make bench`). Machine:\n", machine(), ""]
    for title, script, full, quick in SCRIPTS:
        print(f"running {script} ...", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, str(HERE / script), *(quick if args.quick else full)],
                             capture_output=True, text=True, check=True).stdout
        parts += [f"## {title}\n", f"`{script} {' '.join(quick if args.quick else full)}`\n", out.strip(), ""]
    parts += cuda_section(args.quick)
    Path(args.out).write_text("\n".join(parts) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
