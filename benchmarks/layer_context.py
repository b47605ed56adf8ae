"""Does a network's forward pass take the sum of its layers? Paired, per model, on the CPU.

In alternation, for at least --seconds per model: one forward pass of the model; the same op calls replayed
in the network's order on its data flow with each call timed (cnnprof.predict.sequence: what the layer table
holds on the CPU); and the same calls each run three times back to back with the third timed (an op timed
alone, hot). Each round gives the ratios model / in-order sum and model / hot-alone sum; the medians of those
ratios are printed, so a machine whose speed drifts moves all three alike. What is left of model / in-order
is what the module calls add (cnnprof charges a measured per-module overhead for it).

    .venv/bin/python benchmarks/layer_context.py                 # a few zoo models, batch 1, 1 thread
    .venv/bin/python benchmarks/layer_context.py --models resnet18,vgg16 --batch 8
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

MODELS = ("resnet18,resnet50,mobilenet_v2,mobilenet_v3_small,shufflenet_v2_x1_0,efficientnet_b0,regnet_x_400mf,"
          "mnasnet1_0")


def hot_alone(calls, clock) -> float:
    """Seconds of every call's third run back to back, summed."""
    total = 0.0
    for call in calls:
        call(), call()
        start = clock()
        call()
        total += clock() - start
    return total


def one_model(name: str, batch: int, seconds: float) -> str:
    from cnnprof.cli.models_arg import parse_model_arg, resolve_arg
    from cnnprof.counting.traffic import analyze_memory
    from cnnprof.predict import lut, sequence

    source = resolve_arg(parse_model_arg(name))
    shape = (batch, *source.default_input_shape[1:])
    net, x = source.build("cpu"), torch.randn(shape)
    recorder = lut._record(source, (shape,), "float32")
    replay = sequence.Replay(recorder.plan, "cpu", torch.float32)
    calls = [recorder.layers[k].make("cpu", torch.float32) for k in recorder.order]  # one per call site
    clock, whole, in_order, hot = time.perf_counter, [], [], []
    with torch.inference_mode():
        for _ in range(2):
            net(x), replay.round(), hot_alone(calls, clock)
        end = clock() + seconds
        while clock() < end or len(whole) < 5:
            start = clock()
            net(x)
            whole.append(clock() - start)
            in_order.append(sum(replay.round(clock)))
            hot.append(hot_alone(calls, clock))
    ratio = lambda a, b: statistics.median(p / q for p, q in zip(a, b))  # noqa: E731
    modules = analyze_memory(source, shape, "float32").modules_called
    left = statistics.median(w - s for w, s in zip(whole, in_order)) / max(modules, 1)
    return (f"| {source.label} | {batch} | {len(whole)} | {statistics.median(whole) * 1e3:.2f} | "
            f"{ratio(whole, in_order):.3f} | {ratio(whole, hot):.3f} | {modules} | {left * 1e6:.1f} |")


def main() -> None:
    from cnnprof.timing.timer import keep_freed_memory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS, help="comma-separated models")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=6.0, help="per model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    print(f"{args.threads} thread{'' if args.threads == 1 else 's'}, torch {torch.__version__}\n")
    print("| model | batch | rounds | model (ms) | model / in-order sum | model / hot-alone sum | module calls | "
          "left per module call (µs) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        print(one_model(name, args.batch, args.seconds), flush=True)


if __name__ == "__main__":
    main()
