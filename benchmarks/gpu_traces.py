"""Build benchmarks/data/gpu_tables.json.gz: timm's published GPU inference tables and cnnprof's op trace of
every model they time, so that benchmarks/gpu_tables.py fits and checks the GPU model without timm or a GPU.

Tables: results/benchmark-infer-amp-nchw-*.csv of huggingface/pytorch-image-models (model, infer_img_size,
infer_batch_size, infer_step_time in ms per batch; AMP float16, NCHW, eager PyTorch). The traced rows are every
STRIDE-th row of the RTX 3090 torch 2.4 table sorted by model name (test_* models left out); each other table
keeps the rows of the same model, image size and batch size. Every model is built on the meta device
(timm.create_model, no weights) and traced once at its table's batch and image size by cnnprof's op tracer
(float16 traffic); each op is stored as its GPU features (cnnprof.predict.gpu.features), identical ops merged.
Run (needs timm and a git mirror of the timm repository):
  PYTHONPATH=. /work/venv-real/bin/python benchmarks/gpu_traces.py --timm-repo PATH/TO/timm.git [--stride 3]
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "data" / "gpu_tables.json.gz"
FIT_TABLE = "benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv"
TABLES = {  # file -> datasheet key of the GPU it was measured on
    FIT_TABLE: "rtx3090",
    "benchmark-infer-amp-nchw-pt210-cu121-rtx3090.csv": "rtx3090",
    "benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv": "rtx4090",
    "benchmark-infer-amp-nchw-pt291-cu128-4090.csv": "rtx4090",
    "benchmark-infer-amp-nchw-pt291-cu130-5090.csv": "rtx5090",
}


def read_table(repo: str, commit: str, name: str) -> list[tuple[str, int, int, float]]:
    """(model, image size, batch size, step ms) of one published table."""
    text = subprocess.run(["git", "--git-dir", repo, "show", f"{commit}:results/{name}"], check=True,
                          capture_output=True, text=True).stdout
    keys = ("infer_img_size", "infer_batch_size", "infer_step_time")
    return [(r["model"], int(float(r["infer_img_size"])), int(float(r["infer_batch_size"])),
             float(r["infer_step_time"])) for r in csv.DictReader(io.StringIO(text))
            if all(r.get(k) for k in keys)]  # a row without a time: the run failed there


def _alarm(signum, frame):
    raise TimeoutError("trace took too long")


def trace_row(name: str, img: int, batch: int) -> dict:
    """cnnprof's op trace of one timm model on meta at (batch, 3, img, img), as grouped GPU features."""
    import timm
    import torch

    from cnnprof.counting.run import trace_model
    from cnnprof.counting.traffic import memory_profile
    from cnnprof.predict import gpu

    x = torch.empty(batch, 3, img, img, device="meta")
    last = None
    for device, kwargs in (("meta", {}), ("meta", {"img_size": img}), ("cpu", {}), ("cpu", {"img_size": img})):
        try:  # on meta when the constructor allows it (no weights), else built on the CPU and traced on meta
            with torch.device(device):
                model = timm.create_model(name, pretrained=False, **kwargs).eval()
            mp = memory_profile(trace_model(model, (x,)), "float16")
            break
        except Exception as exc:  # noqa: BLE001 - a model timm cannot build or run this way is skipped
            last = exc
    else:
        raise last
    tot = mp.total()
    ops = [[f.kind, f.flops, f.bytes, f.batch, f.m, f.n, f.k, n] for f, n in gpu.grouped(mp.calls)]
    return {"macs": tot.macs, "bytes": tot.bytes, "ops": ops}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timm-repo", required=True, help="git directory of huggingface/pytorch-image-models")
    ap.add_argument("--commit", default="HEAD")
    ap.add_argument("--stride", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="trace at most this many rows (0: all)")
    args = ap.parse_args()
    commit = subprocess.run(["git", "--git-dir", args.timm_repo, "rev-parse", args.commit], check=True,
                            capture_output=True, text=True).stdout.strip()
    tables = {name: read_table(args.timm_repo, commit, name) for name in TABLES}
    rows = sorted(r for r in tables[FIT_TABLE] if not r[0].startswith("test_"))[::args.stride]
    rows = rows[:args.limit] if args.limit else rows
    traces, skipped = {}, {}
    signal.signal(signal.SIGALRM, _alarm)
    start = time.perf_counter()
    for i, (name, img, batch, _) in enumerate(rows):
        signal.alarm(60)
        try:
            traces[f"{name}@{img}@{batch}"] = trace_row(name, img, batch)
        except Exception as exc:  # noqa: BLE001
            skipped[f"{name}@{img}@{batch}"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        finally:
            signal.alarm(0)
        print(f"[{i + 1}/{len(rows)}] {name} {img} {batch} {time.perf_counter() - start:.0f}s", file=sys.stderr)
    keys = set(traces)
    data = {"source": {"repository": "huggingface/pytorch-image-models", "commit": commit,
                       "tables": {k: {"gpu": v, "path": f"results/{k}"} for k, v in TABLES.items()},
                       "stride": args.stride, "dtype": "float16"},
            "tables": {k: [list(r) for r in rows_ if f"{r[0]}@{r[1]}@{r[2]}" in keys] for k, rows_ in tables.items()},
            "traces": traces, "skipped": skipped}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:  # mtime 0: reproducible
        fh.write(json.dumps(data, separators=(",", ":")).encode())
    print(f"{len(traces)} traced, {len(skipped)} skipped -> {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)", file=sys.stderr)


if __name__ == "__main__":
    main()
