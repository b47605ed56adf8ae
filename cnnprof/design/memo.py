"""A config-built model counted as a sum of memoised part counts: the fast path of design searches.

A Net runs its parts one after another (stem, blocks, stage pools, head: cnnprof.models.builder.parts), and
what one part costs depends only on its type, its arguments and its input shape (pycls's `complexity()` takes
the same view). So each part is traced once, on the meta device, and every later model that contains it adds
up the cached numbers: a sampled model then costs a config materialisation and a few dictionary look-ups
instead of a build and a trace (~1 ms instead of ~50 ms for a RegNet). The sum is exact: tests/test_design_memo.py
checks it against a full count of every sampled model of the shipped spaces. It gives totals only (params, MACs,
other ops, acts, and the predicted latency with a device profile); breakdowns still come from a full trace.

The memo lives per process (MEMO) and, for a search, in a cache file beside the study, which a resumed or a
parallel search reads; the file is data (checked, never run) and is ignored when cnnprof's counting code
changed since it was written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from cnnprof.design.metrics import Point, Settings
from cnnprof.errors import CnnprofError
from cnnprof.inputs import InputSpec

CACHE_LIMIT = 64 << 20  # bytes: a cache file larger than this is not read (and not written)
CACHE_VERSION = 1


@dataclass(frozen=True)
class PartCost:
    """What one part costs at one input shape (and, with a device profile, its predicted time)."""

    out_shape: tuple[int, ...]
    params: int
    macs: int
    other_ops: int
    acts: int
    modules_called: int = 0
    free_calls: int = 0
    roofline_s: float = 0.0
    calibrated_s: float = 0.0  # calibrated time of its ops (roofline where an op type has no fit), no overheads
    calibrated: bool = False  # whether any of its ops had a calibrated fit


class PartCounts:
    """The memo: (part key, input shape, scope, device profile) -> PartCost, with hit and miss counts; `added`
    holds the profile-free entries made since it was last read, so a worker can hand them back."""

    def __init__(self) -> None:
        self.table: dict[tuple, PartCost] = {}
        self.added: dict[tuple, PartCost] = {}
        self.hits = 0
        self.misses = 0
        self._profiles: dict[int, tuple[Any, str]] = {}

    def cost(self, part: Any, shape: tuple[int, ...], scope: str, profile: Any = None) -> PartCost:
        """The cost of `part` (a cnnprof.models.builder.Part) run on an input of `shape`, traced on a miss."""
        key = (part.key, shape, scope, self._profile_key(profile))
        found = self.table.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        cost = measure(part, shape, scope, profile)
        self.table[key] = cost
        if profile is None:
            self.added[key] = cost
        return cost

    def _profile_key(self, profile: Any) -> str | None:
        """A device profile's identity: its whole description (two profiles that print alike predict alike)."""
        if profile is None:
            return None
        known = self._profiles.get(id(profile))
        if known is None or known[0] is not profile:
            known = (profile, repr(profile))
            self._profiles[id(profile)] = known
        return known[1]

    def take_added(self) -> list[tuple[tuple, PartCost]]:
        """The entries made since the last call (profile-free ones), handed over once."""
        added, self.added = list(self.added.items()), {}
        return added

    def learn(self, entries: list[tuple[tuple, PartCost]]) -> None:
        """Add entries another process made and will hand over itself (not added to `added`)."""
        for key, cost in entries:
            self.table.setdefault(key, cost)

    def merge(self, entries: list[tuple[tuple, PartCost]]) -> None:
        """Add entries made elsewhere (by a worker process): they are written with the study's cache."""
        for key, cost in entries:
            if key not in self.table:
                self.table[key] = cost
                self.added[key] = cost


MEMO = PartCounts()


def measure(part: Any, shape: tuple[int, ...], scope: str, profile: Any = None) -> PartCost:
    """Build one part on the meta device and trace it alone on an input of `shape`."""
    import torch

    from cnnprof.counting.flops import flop_count
    from cnnprof.counting.run import trace_model

    with torch.device("meta"):
        module = part.make()
    trace = trace_model(module, [InputSpec(shape)], traffic=profile is not None)
    fc = flop_count(trace, scope)
    out = next(o for name, _, o in trace.module_shapes if name == "")
    if out is None or not all(isinstance(d, int) for d in out):
        raise CnnprofError(f"part {part.key[:60]} gives no single tensor output")
    cost = PartCost(tuple(out), trace.params, fc.macs, fc.other_ops, fc.acts, trace.modules_called, trace.free_calls)
    if profile is None:
        return cost
    from cnnprof.counting.traffic import memory_profile
    from cnnprof.predict.latency import predict_ops

    prediction = predict_ops(memory_profile(trace), profile, "float32")
    calibrated = sum(p.calibrated_s if p.calibrated_s is not None else p.roofline_s for p in prediction.ops)
    return replace(cost, roofline_s=prediction.roofline_s, calibrated_s=calibrated, calibrated=prediction.calibrated)


def first_input(config: Any, settings: Settings) -> tuple[int, ...] | None:
    """The input shape a full count would use (see cnnprof.design.metrics.evaluate), or None where the fast path
    does not apply (several, named or non-float inputs, or ones that are not N,C,H,W)."""
    from cnnprof.inputs import with_batch_and_resolution

    if settings.inputs:
        if settings.resolution is not None or len(settings.inputs) != 1:
            return None
        spec = settings.inputs[0]
        ok = spec.name is None and spec.is_float and spec.dtype == "float32" and len(spec.shape) == 4
        return tuple(spec.shape) if ok else None
    specs = with_batch_and_resolution((InputSpec(config.input_shape),), settings.batch_size, settings.resolution)
    return tuple(specs[0].shape)


def count_config(config: Any, settings: Settings, knobs: Mapping[str, Any], memo: PartCounts = MEMO) -> Point | None:
    """The Point a full count (cnnprof.design.metrics.evaluate, without benchmarking) gives for a ModelConfig, as
    a sum of memoised part costs; None where the fast path does not apply or a part fails (the caller then
    counts in full, which also words the failure as usual)."""
    from cnnprof.models.builder import parts

    shape = first_input(config, settings)
    if shape is None:
        return None
    total = PartCost(shape, 0, 0, 0, 0)
    stages: set[int] = set()
    has_stem = False
    try:
        for part in parts(config):
            cost = memo.cost(part, shape, settings.scope, settings.profile)
            total = _add(total, cost)
            shape = cost.out_shape
            has_stem |= part.place == "stem"
            if part.place == "stage":
                stages.add(part.stage)
    except Exception:  # noqa: BLE001 - the full count words every failure; this path only adds up successes
        return None
    point = Point(tuple(knobs.items()), params=total.params, macs=total.macs, other_ops=total.other_ops,
                  acts=total.acts)
    if settings.profile is None:
        return point
    # The Net's own module calls: itself, one nn.Sequential per stage, and the nn.Identity standing for no stem.
    calls = total.modules_called + 1 + len(stages) + (0 if has_stem else 1)
    return replace(point, latency_s=_latency(total, calls, settings.profile))


def _add(a: PartCost, b: PartCost) -> PartCost:
    return PartCost(b.out_shape, a.params + b.params, a.macs + b.macs, a.other_ops + b.other_ops, a.acts + b.acts,
                    a.modules_called + b.modules_called, a.free_calls + b.free_calls, a.roofline_s + b.roofline_s,
                    a.calibrated_s + b.calibrated_s, a.calibrated or b.calibrated)


def _latency(total: PartCost, module_calls: int, profile: Any) -> float:
    """LatencyPrediction.best_s() of the whole model, from its parts' sums."""
    if not total.calibrated:
        return total.roofline_s
    return total.calibrated_s + module_calls * profile.module_overhead_s + total.free_calls * profile.view_overhead_s


# ----------------------------------------------------------------------------- the study's cache file


def code_version() -> str:
    """A digest of the code that decides what a part costs (counting formulas, blocks, layers): a cache written by
    other code is not read."""
    import hashlib

    import torch

    import cnnprof

    root = Path(cnnprof.__file__).parent
    digest = hashlib.sha256(torch.__version__.encode())
    for path in sorted([*root.glob("counting/**/*.py"), *root.glob("models/*.py")]):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def load_cache(path: str | Path, memo: PartCounts = MEMO) -> str | None:
    """Read a cache file into the memo; a missing file is nothing, a bad or stale one is skipped: (warning or None)."""
    from cnnprof.models.yaml_input import read_regular

    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(read_regular(path, CACHE_LIMIT, str(path), "cache", "JSON", CnnprofError))
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            raise ValueError("not a cnnprof part-count cache of this version")
        if data.get("code") != code_version():
            return None  # written by other counting code: its numbers may differ, so it is not used
        entries = [_entry(e) for e in data.get("entries", ())]
    except (CnnprofError, ValueError, TypeError, KeyError) as exc:
        return f"{path}: not used ({str(exc)[:120]}); the part counts are measured again"
    memo.merge(entries)
    memo.added.clear()  # read from the file: nothing new to write
    return None


def _entry(e: Any) -> tuple[tuple, PartCost]:
    """One stored entry, checked field by field (a cache file is data)."""
    key, shape, scope, out, params, macs, other, acts, calls, free = e
    ints = (params, macs, other, acts, calls, free, *shape, *out)
    if not (isinstance(key, str) and isinstance(scope, str) and all(type(v) is int and v >= 0 for v in ints)):
        raise ValueError("an entry is not (key, shape, scope, counts)")
    return (key, tuple(shape), scope, None), PartCost(tuple(out), params, macs, other, acts, calls, free)


def save_cache(path: str | Path, memo: PartCounts = MEMO) -> str | None:
    """Write the memo's profile-free entries to a cache file when it learnt any: (warning or None)."""
    if not memo.added:
        return None
    entries = [[k[0], list(k[1]), k[2], list(c.out_shape), c.params, c.macs, c.other_ops, c.acts, c.modules_called,
                c.free_calls] for k, c in memo.table.items() if k[3] is None]
    text = json.dumps({"version": CACHE_VERSION, "code": code_version(), "entries": entries}, separators=(",", ":"))
    if len(text) > CACHE_LIMIT:
        return f"{path}: {len(text):,} bytes of part counts, more than {CACHE_LIMIT:,}: not written"
    try:
        tmp = Path(f"{path}.tmp")
        tmp.unlink(missing_ok=True)  # a link planted there is removed, not followed;
        with open(tmp, "x") as f:  # and "x" (O_EXCL) refuses to write through one planted since
            f.write(text)
        tmp.replace(path)
    except OSError as exc:
        return f"{path}: cannot write the part-count cache: {exc.strerror or exc}"
    memo.added.clear()
    return None
