"""Fit and check cnnprof's GPU latency model (cnnprof.predict.gpu) on timm's published GPU inference tables.

Data: benchmarks/data/gpu_tables.json.gz (built by benchmarks/gpu_traces.py: timm's tables at a pinned commit and
cnnprof's op trace of every model in them, as GPU features). Fits the efficiencies (tensor-core fraction, per-tile
fixed K, CUDA-core fraction, launch time, attainable bandwidth fraction per op kind) on the RTX 3090 torch 2.4
table only, minimising a robust loss on log(predicted / measured) step time, and reports:
- held-out error on the RTX 3090 table: 5-fold cross-validation BY MODEL (every row of a model, at every image
  size, in one fold, chosen by a hash of its name), each fold predicted by a fit on the other four;
- Spearman rank correlation with measured time of the held-out predictions, of MACs and of bytes moved;
- the error, without any tuning, of the fit on the whole 3090 table on the other tables (3090 torch 2.1,
  RTX 4090, RTX 5090), each GPU from its datasheet entry in cnnprof/predict/gpus.yaml;
- the pure roofline (efficiencies 1, 5 us launch) for contrast.
Prints Markdown. `--write` stores the whole-table fit in cnnprof/predict/gpus.yaml.
Run: .venv/bin/python benchmarks/gpu_tables.py [--write]   (CPU only, ~1 min; needs no timm and no GPU)
"""
from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cnnprof.predict import gpu  # noqa: E402

DATA = Path(__file__).parent / "data" / "gpu_tables.json.gz"
FIT_TABLE = "benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv"
FOLDS = 5
DTYPE = "float16"  # the tables run AMP: convolutions and matmuls in float16 on the tensor cores
KIND = {k: i for i, k in enumerate(gpu.KINDS)}


def ranks(xs: list[float]) -> list[float]:
    """Average ranks (ties share the mean rank), 1-based."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(xs: list[float], ys: list[float]) -> float:
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


class Rows:
    """The op features of a set of table rows on one GPU, as tensors the fit evaluates in one pass."""

    def __init__(self, rows: list[list], traces: dict, spec: gpu.GpuSpec):
        self.rows = rows
        self.measured = torch.tensor([r[3] / 1e3 for r in rows], dtype=torch.float64)
        self.macs = [traces[key(r)]["macs"] for r in rows]
        self.bytes = [traces[key(r)]["bytes"] for r in rows]
        idx, count, kind, c_k, c_1, simt, mem = [], [], [], [], [], [], []
        for i, r in enumerate(rows):
            for kd, flops, nbytes, batch, m, n, k, cnt in traces[key(r)]["ops"]:
                f = gpu.OpFeatures(kd, flops, nbytes, batch, m, n, k)
                idx.append(i), count.append(cnt), kind.append(KIND[kd]), mem.append(nbytes / spec.bandwidth)
                cost = gpu.gemm_cost(f, spec.sms)[0] / spec.peak_at(DTYPE) if kd == "gemm" else 0.0
                c_k.append(cost * k), c_1.append(cost)
                simt.append(0.0 if kd == "gemm" else flops / spec.peak["float32"])
        as_t = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
        self.idx, self.kind = torch.tensor(idx), torch.tensor(kind)
        self.count, self.c_k, self.c_1, self.simt, self.mem = map(as_t, (count, c_k, c_1, simt, mem))
        self.gemm = self.kind == KIND["gemm"]

    def predict(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Predicted step seconds of every row under efficiencies `p` (tensors: differentiable)."""
        compute = torch.where(self.gemm, (self.c_k + self.c_1 * p["k_fixed"]) / p["gemm"], self.simt / p["simt"])
        t = p["launch_s"] + torch.maximum(compute, self.mem / p["bandwidth"][self.kind])
        return torch.zeros(len(self.rows), dtype=torch.float64).index_add_(0, self.idx, t * self.count)


def key(r: list) -> str:
    return f"{r[0]}@{r[1]}@{r[2]}"


def params(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Efficiencies from unconstrained x: fractions in (0, 1) via a sigmoid, times and K via exp."""
    s = torch.sigmoid
    return {"gemm": s(x[0]), "simt": s(x[1]), "k_fixed": torch.exp(x[2]), "launch_s": torch.exp(x[3]) * 1e-6,
            "bandwidth": s(x[4:])}


def fit(rows: Rows, mask: torch.Tensor, steps: int = 600) -> dict[str, torch.Tensor]:
    """Efficiencies minimising a soft-L1 (pseudo-Huber, delta 0.05) loss of log(predicted / measured) over the
    rows in `mask`: close to the median error, and robust to the few models whose kernels the traces miss."""
    x = torch.tensor([0.5, 0.0, 3.0, 1.0] + [1.0] * len(gpu.KINDS), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.05)
    target = rows.measured[mask].log()
    for i in range(steps):
        if i == steps // 2:
            opt.param_groups[0]["lr"] = 0.01
        opt.zero_grad()
        err = rows.predict(params(x))[mask].log() - target
        loss = (0.05**2 * (torch.sqrt(1 + (err / 0.05) ** 2) - 1)).mean()
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in params(x).items()}


def errors(pred: list[float], measured: list[float]) -> list[float]:
    return [abs(p / m - 1) for p, m in zip(pred, measured)]


def summary(name: str, pred: list[float], rows: Rows) -> str:
    meas = rows.measured.tolist()
    e = sorted(errors(pred, meas))
    within = sum(x <= 0.15 for x in e) / len(e)
    return (f"| {name} | {len(e)} | {100 * statistics.median(e):.1f}% | {100 * e[int(0.9 * (len(e) - 1))]:.1f}% | "
            f"{100 * within:.0f}% | {spearman(pred, meas):.3f} | {spearman(rows.macs, meas):.3f} | "
            f"{spearman(rows.bytes, meas):.3f} |")


def worst(pred: list[float], rows: Rows, n: int = 12) -> str:
    """The n rows with the largest held-out errors, and the median error per family (name up to the first _)."""
    meas = rows.measured.tolist()
    ratio = sorted(((p / m, r) for p, m, r in zip(pred, meas, rows.rows)), key=lambda x: -abs(x[0] - 1))
    lines = ["\nLargest held-out errors: " + ", ".join(f"{r[0]} @{r[1]} b{r[2]} {100 * (q - 1):+.0f}%"
                                                       for q, r in ratio[:n])]
    fams: dict[str, list[float]] = {}
    for q, r in ratio:
        fams.setdefault(r[0].split("_")[0].rstrip("0123456789"), []).append(q - 1)
    big = sorted(((statistics.median(v), k, len(v)) for k, v in fams.items() if len(v) >= 8), key=lambda x: x[1])
    lines.append("Median signed held-out error by family (8 rows or more): "
                 + ", ".join(f"{k} {100 * m:+.0f}% ({c})" for m, k, c in big))
    return "\n".join(lines) + "\n"


def efficiency(p: dict[str, torch.Tensor], fitted_on: str) -> gpu.Efficiency:
    return gpu.Efficiency(gemm=float(p["gemm"]), k_fixed=float(p["k_fixed"]), simt=float(p["simt"]),
                          launch_s=float(p["launch_s"]), fitted_on=fitted_on,
                          bandwidth={k: float(p["bandwidth"][i]) for k, i in KIND.items()})


def roofline() -> dict[str, torch.Tensor]:
    one = torch.tensor(1.0, dtype=torch.float64)
    return {"gemm": one, "simt": one, "k_fixed": 0 * one, "launch_s": 5e-6 * one,
            "bandwidth": torch.ones(len(gpu.KINDS), dtype=torch.float64)}


def cross_validate(rows: Rows) -> list[float]:
    """Held-out predictions of every row: FOLDS folds by model name, each predicted by a fit on the others."""
    fold = torch.tensor([zlib.crc32(r[0].encode()) % FOLDS for r in rows.rows])
    pred = torch.zeros(len(rows.rows), dtype=torch.float64)
    for k in range(FOLDS):
        p = fit(rows, fold != k)
        pred[fold == k] = rows.predict(p)[fold == k]
    return pred.tolist()


def write_yaml(eff: gpu.Efficiency) -> None:
    """Replace the efficiency block of gpus.yaml (everything after its marker line) with `eff`."""
    text = gpu.DATA_FILE.read_text()
    marker = "# Written by benchmarks/gpu_tables.py --write (everything below this line).\n"
    bw = ", ".join(f"{k}: {v:.4f}" for k, v in eff.bandwidth.items())
    block = (f"efficiency:\n  fitted_on: {eff.fitted_on}\n  gemm: {eff.gemm:.4f}\n  k_fixed: {eff.k_fixed:.2f}\n"
             f"  simt: {eff.simt:.4f}\n  launch_s: {eff.launch_s:.3e}\n  bandwidth: {{{bw}}}\n")
    gpu.DATA_FILE.write_text(text[:text.index(marker) + len(marker)] + block)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="store the whole-table fit in cnnprof/predict/gpus.yaml")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with gzip.open(DATA, "rt") as fh:
        data = json.load(fh)
    specs = gpu.load()[0]
    src = data["source"]
    tables = {name: Rows(rows, data["traces"], specs[src["tables"][name]["gpu"]])
              for name, rows in data["tables"].items() if rows}
    base = tables[FIT_TABLE]
    print(f"Tables: {src['repository']} at {src['commit'][:12]} (`results/`), every {src['stride']}nd row of the "
          f"RTX 3090 torch 2.4 table ({len(data['traces'])} traced, {len(data['skipped'])} timm could not build on "
          f"meta/CPU or cnnprof could not trace); AMP float16, NCHW, eager PyTorch; step time of one batch "
          f"(mostly 1024 images).\n")
    head = ("| Table (GPU, datasheet) | Rows | Median abs. error | 90th pct | Within 15% | Spearman: predicted | "
            "MACs | bytes |\n|:---|---:|---:|---:|---:|---:|---:|---:|")
    print(f"### Held-out on the RTX 3090 table ({FOLDS}-fold cross-validation by model)\n\n{head}")
    held_out = cross_validate(base)
    print(summary(f"{FIT_TABLE} (held-out)", held_out, base))
    print(summary(f"{FIT_TABLE} (pure roofline, no fit)", base.predict(roofline()).tolist(), base))
    print(worst(held_out, base))
    full = fit(base, torch.ones(len(base.rows), dtype=torch.bool))
    eff = efficiency(full, f"timm RTX 3090 table, torch 2.4 AMP, {len(base.rows)} rows")
    print(f"\n### Fit on the whole RTX 3090 table, applied untuned to other tables\n\n{head}")
    for name, rows in tables.items():
        label = f"{name} ({'fitted on it: in-sample' if name == FIT_TABLE else 'untuned'})"
        print(summary(label, rows.predict(full).tolist(), rows))
        if name != FIT_TABLE:
            print(summary(f"{name} (pure roofline)", rows.predict(roofline()).tolist(), rows))
    bw = ", ".join(f"{k} {v:.2f}" for k, v in eff.bandwidth.items())
    print(f"\nFitted: tensor-core fraction {eff.gemm:.3f}, per-tile fixed K {eff.k_fixed:.1f}, CUDA-core fraction "
          f"{eff.simt:.3f}, launch {1e6 * eff.launch_s:.2f} us; bandwidth fractions: {bw}.")
    if args.write:
        write_yaml(eff)
        print(f"\nWritten to {gpu.DATA_FILE}.", file=sys.stderr)
    check = gpu.model_time([(gpu.OpFeatures(*o[:7]), o[7]) for o in data["traces"][key(base.rows[0])]["ops"]],
                           specs["rtx3090"], eff, DTYPE)
    assert abs(check / float(base.predict(full)[0]) - 1) < 1e-6, "gpu.model_time disagrees with the fit's model"


if __name__ == "__main__":
    main()
