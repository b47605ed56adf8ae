"""GPU latency without the GPU: a datasheet device (gpus.yaml) priced per op with efficiencies fitted to
published whole-model measurements (timm's RTX 3090 inference tables, benchmarks/gpu_tables.py).

Every op is one kernel: t = launch_s + max(compute, memory), where
- memory = bytes / (bandwidth * attainable fraction of the op kind: GEMM, depthwise conv, norm, streaming
  element-wise / activation / copy, windowed pooling, global pooling);
- compute of a GEMM (dense / pointwise / grouped conv as implicit GEMM, linear, matmul) is priced in output
  tiles on the tensor cores: the output of `batch` GEMMs of M x N is cut into TM x TN tiles, the tiles run in
  waves of one tile per SM (wave quantisation: a wave that is 1% full costs a whole wave), and one tile costs
  2 * TM * TN * (K + k_fixed) FLOPs at the attained fraction `gemm` of the dtype's peak (k_fixed: the tile's
  prologue and epilogue, which make short-K GEMMs inefficient), slower for small tiles (TILES, tile_rate);
  each GEMM takes the tile size that makes it fastest;
- compute of anything else (depthwise conv, element-wise math) runs on the CUDA cores at `simt` x the float32
  peak;
- scaled_dot_product_attention (traced as its math) is one fused kernel, as PyTorch runs it on a GPU.
FLOPs are in the nvidia convention (1 MAC = 2 FLOPs). The fitted numbers live in gpus.yaml beside the
datasheet entries, with where they come from.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from cnnprof.counting.traffic import OpCall
from cnnprof.predict.profile_file import DTYPES, ProfileError

DATA_FILE = Path(__file__).with_name("gpus.yaml")
KINDS = ("gemm", "depthwise", "norm", "streaming", "pooling", "reduction")
_KIND_OF = {"conv": "gemm", "pointwise conv": "gemm", "grouped conv": "gemm", "linear": "gemm",
            "depthwise conv": "depthwise", "batch norm": "norm", "layer norm": "norm", "pooling": "pooling",
            "global pooling": "reduction"}  # every other op type (activations, element-wise, copies): streaming
_BATCHED = frozenset(("bmm", "baddbmm", "matmul"))


@dataclass(frozen=True)
class OpFeatures:
    """What the GPU model needs of one op: its kind, FLOPs (nvidia), bytes and, for a GEMM, its shape."""

    kind: str
    flops: float
    bytes: float
    batch: int = 0  # independent GEMMs (groups, bmm batch); 0 when not a GEMM
    m: int = 0
    n: int = 0
    k: int = 0


def features(call: OpCall) -> OpFeatures:
    """The GPU model's view of one op call: a conv is an implicit GEMM of M = batch * output pixels, N = output
    channels per group, K = MACs per output element; a linear / matmul has N = the last output dimension."""
    from cnnprof.predict.latency import op_type_of

    kind = _KIND_OF.get(op_type_of(call), "streaming")
    out = math.prod(call.shape) if call.shape else 0
    if kind != "gemm" or not out or not call.macs or len(call.shape) < 2:
        return OpFeatures(kind if kind != "gemm" else "streaming", call.flops, call.bytes)
    k = max(1, round(call.macs / out))
    if call.kernel or "conv" in call.op:  # NC... layout: channels are dimension 1
        groups = max(1, call.groups)
        n = call.shape[1] // groups
        return OpFeatures(kind, call.flops, call.bytes, groups, out // call.shape[1], n, k)
    n = call.shape[-1]
    if call.op in _BATCHED and len(call.shape) >= 3:
        batch = math.prod(call.shape[:-2])
        return OpFeatures(kind, call.flops, call.bytes, batch, call.shape[-2], n, k)
    return OpFeatures(kind, call.flops, call.bytes, 1, out // n, n, k)


# scaled_dot_product_attention as cnnprof traces it (its math: q and k scaled and copied, bmm, _safe_softmax,
# v copied, bmm) runs on a GPU as ONE fused kernel (flash / memory-efficient attention): the L x L scores never
# reach memory. An explicit `softmax` (models that write attention out) is left as the separate kernels it is.
_SDPA_SOFTMAX = "_safe_softmax"
_SDPA_STEPS = frozenset(("mul", "div", "clone", "contiguous", "expand", "_to_copy"))


def _bmm_near(calls: Sequence[OpCall], i: int, step: int) -> int | None:
    """Index of the bmm at most 3 ops from `i` in direction `step`, in the same module, past SDPA's copies."""
    j = i + step
    while 0 <= j < len(calls) and abs(j - i) <= 3 and calls[j].module == calls[i].module:
        if calls[j].op in _BATCHED:
            return j
        if calls[j].op not in _SDPA_STEPS:
            return None
        j += step
    return None


def _fused_attention(calls: Sequence[OpCall], first: int, last: int, feats: list) -> OpFeatures:
    """One flash-attention kernel for calls[first..last]: both bmms' work as one GEMM of M = queries, N = value
    width, K = MACs / (batch x M x N); bytes = q, k, v read and the output written."""
    a, b = calls[first], calls[last]
    fa, fb = feats[first], feats[last]
    k = max(1, round((a.macs + b.macs) / max(1, fa.batch * fa.m * fb.n)))
    nbytes = a.bytes_read + (b.bytes_read - a.bytes_written) + b.bytes_written  # b read P (= a's output) and v
    return OpFeatures("gemm", a.flops + b.flops, nbytes, fa.batch, fa.m, fb.n, k)


def op_features(calls: Sequence[OpCall]) -> list[OpFeatures | None]:
    """features() of every call, with each traced scaled_dot_product_attention fused into one kernel: its last
    bmm carries the fused kernel, the calls before it (scaling, copies, first bmm, softmax) become None."""
    feats: list[OpFeatures | None] = [features(c) for c in calls]
    for i, c in enumerate(calls):
        if c.op != _SDPA_SOFTMAX:
            continue
        a, b = _bmm_near(calls, i, -1), _bmm_near(calls, i, 1)
        if a is None or b is None or feats[a].kind != "gemm" or feats[b].kind != "gemm":
            continue
        start = a
        while start > 0 and a - start < 4 and calls[start - 1].module == c.module and calls[start - 1].op in _SDPA_STEPS:
            start -= 1
        fused = _fused_attention(calls, a, b, feats)
        feats[start:b] = [None] * (b - start)
        feats[b] = fused
    return feats


@dataclass(frozen=True)
class GpuSpec:
    """A GPU's datasheet: dense peaks per dtype (float16 / bfloat16: tensor cores with float32 accumulation, as
    PyTorch runs them; float32: CUDA cores), memory bandwidth, SM count, and the documents they come from."""

    key: str
    name: str
    sms: int
    peak: dict[str, float]
    bandwidth: float
    sources: tuple[str, ...]

    def peak_at(self, dtype: str) -> float:
        return self.peak.get(dtype) or self.peak["float32"]


@dataclass(frozen=True)
class Efficiency:
    """Fitted efficiencies of one GPU generation's kernels, shared by every datasheet GPU."""

    gemm: float  # attained fraction of the dtype's peak inside a full tile
    k_fixed: float  # per-tile fixed cost, in K units
    simt: float  # attained fraction of the float32 peak by non-GEMM math
    launch_s: float  # per-kernel fixed time
    bandwidth: dict[str, float]  # op kind -> attained fraction of the datasheet bandwidth
    fitted_on: str = ""  # what the numbers were fitted to

    def describe(self) -> str:
        return f"GPU efficiency model ({self.fitted_on})" if self.fitted_on else "GPU efficiency model"


# Output tiles a GEMM kernel may use (TM, TN). A tile does TM * TN MACs per TM + TN operands loaded, so its
# per-SM rate is TILE_RATE(tile) = min(1, TM * TN / (TM + TN) / 64) of the full-tile rate (128 x 128 -> 1,
# 64 x 64 -> 1/2): small tiles fill more SMs at a lower rate, and each GEMM gets the fastest (as cuBLAS picks).
TILES = ((128, 128), (128, 64), (64, 64), (128, 32), (64, 32), (32, 32))


def tile_rate(tile: tuple[int, int]) -> float:
    """Per-SM rate of a tile relative to a 128 x 128 one (operands loaded per MAC)."""
    tm, tn = tile
    return min(1.0, tm * tn / (tm + tn) / 64)


def gemm_waves(f: OpFeatures, sms: int, tile: tuple[int, int]) -> tuple[int, int]:
    """(tiles, waves) of a GEMM cut into `tile`-sized output tiles, run one per SM per wave."""
    tiles = f.batch * math.ceil(f.m / tile[0]) * math.ceil(f.n / tile[1])
    return tiles, math.ceil(tiles / sms)


def gemm_cost(f: OpFeatures, sms: int) -> tuple[float, tuple[int, int]]:
    """(FLOPs per unit of K at the full-tile rate, tile): waves x SMs x 2 * TM * TN / rate, minimised over TILES.
    A GEMM's compute time is this x (K + k_fixed) / (peak x gemm); the best tile does not depend on k_fixed."""
    return min((gemm_waves(f, sms, t)[1] * sms * 2 * t[0] * t[1] / tile_rate(t), t) for t in TILES)


def gemm_compute_s(f: OpFeatures, spec: GpuSpec, eff: Efficiency, dtype: str) -> float:
    """Tensor-core time of a GEMM: waves of tiles, each 2 * TM * TN * (K + k_fixed) FLOPs at the tile's rate."""
    cost, _ = gemm_cost(f, spec.sms)
    return cost * (f.k + eff.k_fixed) / (spec.peak_at(dtype) * eff.gemm)


def op_time(f: OpFeatures, spec: GpuSpec, eff: Efficiency, dtype: str) -> float:
    """Predicted seconds of one op (one kernel): launch + max(compute, memory)."""
    memory = f.bytes / (spec.bandwidth * eff.bandwidth[f.kind])
    if f.kind == "gemm":
        compute = gemm_compute_s(f, spec, eff, dtype)
    else:
        compute = f.flops / (spec.peak["float32"] * eff.simt)
    return eff.launch_s + max(compute, memory)


def model_time(ops: Iterable[tuple[OpFeatures, int]], spec: GpuSpec, eff: Efficiency, dtype: str) -> float:
    """Predicted seconds of a forward pass: the sum of its ops' times, over (features, count) pairs."""
    return sum(n * op_time(f, spec, eff, dtype) for f, n in ops)


# ----------------------------------------------------------------------------- the data file


def _number(value: Any, where: str, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise ProfileError(f"{where}: expected a number in ({low:g}, {high:g}], got {value!r}")
    return float(value)


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _spec(key: str, d: Any, where: str) -> GpuSpec:
    d = _mapping(d, where)
    peak = _mapping(d.get("peak"), f"{where}.peak")
    if "float32" not in peak or set(peak) - set(DTYPES):
        raise ProfileError(f"{where}.peak: expected FLOP/s per dtype ({', '.join(DTYPES)}) with float32")
    sources = d.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
        raise ProfileError(f"{where}.sources: expected a non-empty list of the documents the numbers come from")
    sms = d.get("sms")
    if isinstance(sms, bool) or not isinstance(sms, int) or not 0 < sms <= 4096:
        raise ProfileError(f"{where}.sms: expected an SM count, got {sms!r}")
    if not isinstance(d.get("name"), str) or not d["name"]:
        raise ProfileError(f"{where}.name: expected a name")
    return GpuSpec(key=key, name=d["name"], sms=sms, bandwidth=_number(d.get("bandwidth"), f"{where}.bandwidth"),
                   peak={k: _number(v, f"{where}.peak.{k}") for k, v in peak.items()}, sources=tuple(sources))


def _efficiency(d: Any, where: str) -> Efficiency:
    d = _mapping(d, where)
    bw = _mapping(d.get("bandwidth"), f"{where}.bandwidth")
    if set(bw) != set(KINDS):
        raise ProfileError(f"{where}.bandwidth: expected a fraction for each of {', '.join(KINDS)}")
    return Efficiency(gemm=_number(d.get("gemm"), f"{where}.gemm", high=1.0),
                      k_fixed=_number(d.get("k_fixed"), f"{where}.k_fixed", low=-1e-300, high=1e6),
                      simt=_number(d.get("simt"), f"{where}.simt", high=1.0),
                      launch_s=_number(d.get("launch_s"), f"{where}.launch_s", low=-1e-300, high=1e-2),
                      bandwidth={k: _number(v, f"{where}.bandwidth.{k}", high=1.0) for k, v in bw.items()},
                      fitted_on=str(d.get("fitted_on", "")))


def parse(data: Any, what: str = str(DATA_FILE)) -> tuple[dict[str, GpuSpec], Efficiency]:
    """The datasheet entries and the efficiencies of a gpus.yaml document, every field checked."""
    data = _mapping(data, what)
    gpus = _mapping(data.get("gpus"), f"{what}: gpus")
    if not gpus:
        raise ProfileError(f"{what}: gpus: expected at least one GPU")
    specs = {str(k): _spec(str(k), v, f"{what}: gpus.{k}") for k, v in gpus.items()}
    return specs, _efficiency(data.get("efficiency"), f"{what}: efficiency")


@lru_cache(maxsize=1)
def load() -> tuple[dict[str, GpuSpec], Efficiency]:
    """The packaged gpus.yaml, parsed and checked."""
    from cnnprof.models.yaml_input import read_yaml

    return parse(read_yaml(DATA_FILE), DATA_FILE.name)


def datasheets() -> dict[str, dict[str, Any]]:
    """The datasheet GPUs of gpus.yaml (name, peak, bandwidth, ...) by key."""
    return {k: {"name": s.name, "peak": dict(s.peak), "bandwidth": s.bandwidth} for k, s in load()[0].items()}


def spec_named(name: str) -> GpuSpec | None:
    """The datasheet GPU whose display name is `name`, or None."""
    return next((s for s in load()[0].values() if s.name == name), None)


def with_efficiency(pred: Any, profile: Any, eff: Efficiency | None = None) -> Any:
    """A LatencyPrediction on a datasheet GPU with every op priced by the efficiency model (its
    calibrated time), or `pred` unchanged when `profile` is not a datasheet GPU of gpus.yaml."""
    spec = spec_named(profile.name) if profile.device == "cuda" and profile.source == "datasheet" else None
    if spec is None:
        return pred
    eff = eff or load()[1]
    feats = op_features([p.call for p in pred.ops])  # an op fused into an attention kernel costs nothing more
    ops = tuple(dataclasses.replace(p, calibrated_s=0.0 if f is None else op_time(f, spec, eff, pred.dtype))
                for p, f in zip(pred.ops, feats))
    return dataclasses.replace(pred, ops=ops, module_overhead_s=0.0, view_overhead_s=0.0,
                               latency_model=eff.describe())


def grouped(calls: Sequence[OpCall]) -> list[tuple[OpFeatures, int]]:
    """(features, count) of every distinct op of a forward pass, in first-seen order."""
    counts: dict[OpFeatures, int] = {}
    for f in op_features(calls):
        if f is not None:
            counts[f] = counts.get(f, 0) + 1
    return list(counts.items())
