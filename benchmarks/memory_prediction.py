"""Predicted vs measured peak memory of inference and a training step on the CPU (issue 15).

Predicted: cnnprof.counting.footprint on the meta device (what `cnnprof memory` reports). Measured: the same
forward pass or training step (forward, loss, backward, Adam step) run for real on the CPU after one warm-up
step, its peak taken from the CPU allocator's memory events (torch.profiler, profile_memory=True) on top of
the resident parameters, buffers, inputs and optimizer state (cnnprof.timing.peak, what `bench` records).
Configurations run one after another (the batch-32 ones are several GiB), at 1 thread.
With --amp: mixed precision, the prediction's autocast emulation (cnnprof memory --amp) against the same call
under torch.autocast("cpu", dtype=torch.bfloat16) (inference in torch.inference_mode; a training step with
forward and loss under autocast, backward and step outside it).
Run: .venv/bin/python benchmarks/memory_prediction.py [--models resnet18,...] [--batch-sizes 1,8,32] [--amp]
"""
from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time

import torch

from cnnprof.counting.amp import real_autocast
from cnnprof.counting.footprint import footprint, make_optimizer, prime_optimizer, train_step
from cnnprof.inputs import InputSpec
from cnnprof.models.spec import resolve
from cnnprof.timing.peak import peak_bytes, resident_bytes
from cnnprof.timing.prepare import Bound, Plan, bind, prepare

MODELS = ("resnet18", "mobilenet_v2", "efficientnet_b0", "convnext_tiny")


def amp_bound(net: torch.nn.Module, specs: tuple, mode: str, optimizer: str) -> Bound:
    """The call of `mode` under real CPU autocast, and what is resident while it runs (as bind, with autocast)."""
    x = torch.rand(specs[0].shape)
    if mode != "train":
        def infer() -> None:
            with torch.inference_mode(), real_autocast("cpu"):
                net(x)
        return Bound(infer, resident_bytes(net, [x]))
    opt = make_optimizer(optimizer, net.parameters())
    prime_optimizer(opt)
    return Bound(lambda: train_step(net, opt, (x,), {}, real_autocast("cpu")), resident_bytes(net, [x], opt))


def measure(name: str, batch: int, mode: str, optimizer: str, amp: bool = False) -> tuple[int, int, float]:
    """(predicted bytes, measured bytes, seconds the prediction took) of one configuration."""
    source = resolve(name)
    specs = (InputSpec((batch, 3, 224, 224)),)
    t0 = time.perf_counter()
    predicted = footprint(source.build("meta"), specs, mode=mode, optimizer=optimizer, amp=amp).peak
    seconds = time.perf_counter() - t0
    plan = Plan(mode=mode, optimizer=optimizer)
    net = prepare(source, "cpu", "float32", False, False, train=mode == "train")
    bound = amp_bound(net, specs, mode, optimizer) if amp else bind(net, specs, plan)
    with torch.inference_mode(mode == "infer"):
        bound.call()  # warm-up: what a first call allocates once (oneDNN caches) is not the steady state
        measured = peak_bytes(bound.call, "cpu", bound.resident)
    del bound, net
    gc.collect()
    return predicted, measured, seconds


COMMAND = ["memory", "resnet50", "--mode", "train", "--batch-size", "256", "--optimizer", "adam", "--budget", "24GiB"]


def command_seconds(runs: int) -> tuple[float, float, float]:
    """Median wall seconds of `cnnprof memory resnet50 ...` (the issue's < 3 s), its median user+system CPU
    seconds, and the median wall seconds of `python -c "import torch"` for scale; each in a fresh process."""
    def one(args: list[str]) -> tuple[float, float]:
        helper = ("import resource, subprocess, time; t = time.perf_counter(); "
                  f"subprocess.run({args!r}, check=True, stdout=subprocess.DEVNULL); "
                  "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
                  "print(time.perf_counter() - t, r.ru_utime + r.ru_stime)")
        out = subprocess.run([sys.executable, "-c", helper], capture_output=True, text=True, check=True).stdout
        wall, cpu = map(float, out.split())
        return wall, cpu

    cmd = [one([sys.executable, "-m", "cnnprof.cli", *COMMAND]) for _ in range(runs)]
    torch_only = [one([sys.executable, "-c", "import torch"])[0] for _ in range(runs)]
    return (statistics.median(w for w, _ in cmd), statistics.median(c for _, c in cmd),
            statistics.median(torch_only))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--modes", default="infer,train")
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--runs", type=int, default=3, help="runs of the timed command (0: none)")
    parser.add_argument("--amp", action="store_true", help="mixed precision: CPU autocast to bfloat16")
    args = parser.parse_args()
    torch.set_num_threads(1)
    precision = "float32 weights, autocast to bfloat16" if args.amp else "float32"
    print(f"torch {torch.__version__}, CPU, 1 thread, {precision}, 224x224; train: cross-entropy + "
          f"{args.optimizer}\n")
    print("| model | mode | batch | predicted (MiB) | measured (MiB) | error | prediction time (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    worst = 0.0
    for name in args.models.split(","):
        for mode in args.modes.split(","):
            for batch in map(int, args.batch_sizes.split(",")):
                predicted, measured, seconds = measure(name, batch, mode, args.optimizer, args.amp)
                error = (predicted - measured) / measured
                worst = max(worst, abs(error))
                print(f"| {name} | {mode} | {batch} | {predicted / 2**20:,.1f} | {measured / 2**20:,.1f} | "
                      f"{100 * error:+.1f}% | {seconds:.2f} |", flush=True)
    print(f"\nLargest error: {100 * worst:.1f}% (acceptance: within 10%).")
    if args.runs <= 0:
        return
    wall, cpu, torch_s = command_seconds(args.runs)
    print(f"\n`cnnprof {' '.join(COMMAND)}`: {wall:.2f} s wall, {cpu:.2f} s CPU (median of {args.runs}; "
          f"`python -c \"import torch\"` alone: {torch_s:.2f} s wall).")


if __name__ == "__main__":
    main()
