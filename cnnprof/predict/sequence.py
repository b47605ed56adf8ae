"""Layers timed in their network's order, on the network's own data flow (CPU).

A layer timed alone, the same call again and again, runs hotter than in its network: its code, its oneDNN
primitive and the block the allocator hands its output are the ones of the call before, and nothing else ran
in between. Inside a network every op follows a different one, reads the activation the op before it just wrote
and weights last touched a whole forward pass ago. On a 2-core EPYC VM, a network's forward pass took 1.1-1.7x
the sum of its ops each run hot and alone, and 1.02-1.21x the sum of the same ops timed one by one in the
network's order, the rest being its Python module calls (benchmarks/layer_context.py, RESULTS.md).

So on the CPU the layer table is filled by replaying a model's recorded op calls in execution order, each timed:
an argument that an earlier recorded call wrote is that call's real output (a view of it where the network
took one), every other tensor (weights, buffers, the input) is made once per call site, and an output is
dropped after its last reader, as the network frees it. A layer's time is the mean of its key's calls over
the typical rounds (`typical_rounds`), so that the layers add up to a typical pass. No module is built and
nothing of the user's code runs: the calls were recorded on meta.

The tensors made once hold what a freshly initialised network holds (`init_for`): a weight He-normal for its
fan-in, norm weights and running variances ones, biases and running means zeros, the input standard normal.
Values matter to the time: made uniform in [0, 1), every weight positive, the activations of a replayed
googlenet grew by ~100x per layer and were inf from the middle on, and its max-pools, whose loop branches on
each comparison, ran in 0.55x the time they take in the network.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from torch.utils._pytree import tree_leaves, tree_map_only

from cnnprof.counting.liveness import storage_key

MAX_BYTES = 2 << 30  # weights and live activations of a replay; beyond, layers are timed alone (predict.lut)
WARMUP_ROUNDS = 2  # the first round makes oneDNN's primitives and the allocator's blocks
MIN_ROUNDS = 5


ZERO_NAMES = frozenset({"bias", "running_mean"})  # 1-D arguments a fresh network holds at zero
WEIGHT_NAMES = frozenset({"weight", "mat2"})  # >= 2-D arguments that are a layer's weight (mat2: a linear's, (in, out))


@dataclass(frozen=True)
class TensorSpec:
    """A tensor argument of a recorded op: enough to make one like it on any device."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: Any  # torch.dtype as recorded (floating ones become the run's dtype)
    init: tuple[str, float] = ("normal", 1.0)  # how a floating one is filled: normal (with this std), ones, zeros


def init_for(name: str, t: Any) -> tuple[str, float]:
    """How to fill a made-once floating tensor that an op takes as its argument `name` (its schema's), as a
    freshly initialised network holds it: a weight He-normal for its fan-in (std sqrt(2 / fan-in), which keeps
    the activations' scale through a ReLU), a 1-D or scalar one ones (norm weights, running variances, scales)
    or zeros (biases, running means), anything else standard normal (the input)."""
    if t.dim() <= 1:
        return ("zeros", 0.0) if name in ZERO_NAMES else ("ones", 0.0)
    if name in WEIGHT_NAMES:
        fan_in = t.shape[0] if name == "mat2" else t.numel() // max(t.shape[0], 1)
        return ("normal", (2.0 / max(fan_in, 1)) ** 0.5)
    return ("normal", 1.0)


def _spec_of(t: Any, name: str = "") -> TensorSpec:
    return TensorSpec(tuple(t.shape), tuple(t.stride()), t.dtype, init_for(name, t))


def by_argument(func: Any, args: tuple, kwargs: dict, make: Callable[[Any, str], Any]) -> tuple[tuple, dict]:
    """A call of the aten op `func` with every tensor in its arguments replaced by `make(tensor, name)`, `name` the
    schema's name of the argument it is in (a tensor inside a list, the list's; "" past the schema)."""
    import torch

    schema = getattr(func, "_schema", None)
    names = [a.name for a in schema.arguments] if schema is not None else []
    each = lambda v, n: tree_map_only(torch.Tensor, lambda t: make(t, n), v)  # noqa: E731
    return (tuple(each(v, names[i] if i < len(names) else "") for i, v in enumerate(args)),
            {k: each(v, k) for k, v in kwargs.items()})


def spec(func: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A call's arguments with a TensorSpec for every tensor in them, filled as `init_for` says for the
    argument it is."""
    return by_argument(func, args, kwargs, _spec_of)


def _storage(t: Any) -> int:
    """Elements a tensor of this shape and stride spans (0 when it is empty)."""
    if any(s == 0 for s in t.shape):
        return 0
    return 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride))


def _tensor(t: TensorSpec, device: str, dtype: Any) -> Any:
    """A fresh tensor like `t`: at `dtype` filled as its `init` says when floating, else zeros."""
    import torch

    size = max(_storage(t), 1)
    if not t.dtype.is_floating_point:
        base = torch.zeros(size, device=device, dtype=t.dtype)
    elif t.init[0] == "normal":
        base = torch.randn(size, device=device, dtype=dtype).mul_(t.init[1])
    else:
        base = (torch.ones if t.init[0] == "ones" else torch.zeros)(size, device=device, dtype=dtype)
    return base.as_strided(t.shape, t.stride)


def make_tensors(value: Any, device: str, dtype: Any) -> Any:
    """`value` with a fresh tensor for every TensorSpec in it (what else it holds is left as it is)."""
    return tree_map_only(TensorSpec, lambda t: _tensor(t, device, dtype), value)


@dataclass(frozen=True)
class Written:
    """A tensor argument an earlier recorded call wrote: replayed as a view of that call's real output."""

    storage: int  # the meta storage's id while recording
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # storage offset, in elements
    fallback: Any  # the TensorSpec to make one from when the writer's output is not there


@dataclass(frozen=True)
class Step:
    """One recorded call: its layer key, the op, its arguments (TensorSpec or Written leaves) and the storages
    its tensor outputs wrote, as (leaf index, storage id, storage offset)."""

    key: str
    func: Any
    args: tuple
    kwargs: dict
    outputs: tuple[tuple[int, int, int], ...]


def leaves(value: Any) -> list[Any]:
    """The tensors of an op's output (a tensor, or a tuple or list of them), in order."""
    import torch

    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


@dataclass
class Plan:
    """The recorded calls of one forward pass, with which storage each argument was written by, and when each
    written storage is read for the last time."""

    element_bytes: int
    steps: list[Step] = field(default_factory=list)
    frees: dict[int, list[int]] = field(default_factory=dict)  # step index -> storages last read there
    fresh_bytes: int = 0  # tensors made once per call site (weights, buffers, input)
    peak_live_bytes: int = 0  # outputs alive at once
    _written: dict[int, int] = field(default_factory=dict)  # storage id -> bytes, for every recorded output
    _last_read: dict[int, int] = field(default_factory=dict)
    _last_write: dict[int, int] = field(default_factory=dict)
    _alive: list[Any] = field(default_factory=list)  # meta outputs kept, so that no storage id is reused

    def add(self, key: str, func: Any, args: Any, kwargs: Any, out: Any) -> None:
        """Record one call of `func` on meta: its arguments and what it wrote."""
        index = len(self.steps)
        args, kwargs = by_argument(func, args, kwargs, lambda t, name: self._argument(t, name, index))
        outputs = []
        for i, t in enumerate(leaves(out)):
            sid = storage_key(t)
            self._written[sid] = _nbytes(t, self.element_bytes)
            self._last_write[sid] = index
            outputs.append((i, sid, t.storage_offset()))
            self._alive.append(t)
        self.steps.append(Step(key, func, args, kwargs, tuple(outputs)))

    def _argument(self, t: Any, name: str, index: int) -> TensorSpec | Written:
        sid = storage_key(t)
        if sid in self._written:
            self._last_read[sid] = index
            return Written(sid, tuple(t.shape), tuple(t.stride()), t.storage_offset(), _spec_of(t))
        self.fresh_bytes += _nbytes(t, self.element_bytes)
        return _spec_of(t, name)

    def finish(self) -> "Plan":
        """Fix when each written storage is dropped (after its last reader; one nobody reads, after its writer)
        and the peak bytes of outputs alive at once."""
        frees: dict[int, list[int]] = defaultdict(list)
        for sid, index in self._last_write.items():
            frees[max(index, self._last_read.get(sid, index))].append(sid)
        self.frees = dict(frees)
        live, seen = 0, set()
        for index, step in enumerate(self.steps):
            for _, sid, _ in step.outputs:
                if sid not in seen:
                    seen.add(sid)
                    live += self._written[sid]
            self.peak_live_bytes = max(self.peak_live_bytes, live)
            live -= sum(self._written[sid] for sid in self.frees.get(index, ()))
        self._alive.clear()
        return self

    @property
    def bytes(self) -> int:
        """What a replay holds at most: the tensors made once, and the outputs alive at once."""
        return self.fresh_bytes + self.peak_live_bytes


def _nbytes(t: Any, element_bytes: int) -> int:
    """Bytes of a tensor's storage at the run's element size when floating."""
    elements = max(t.untyped_storage().nbytes() // max(t.element_size(), 1), 1)
    return elements * (element_bytes if t.dtype.is_floating_point else t.element_size())


class Replay:
    """A plan's calls on real tensors of `device` and `dtype`: the made-once tensors are made here, the written
    ones are the replayed outputs of their writers."""

    def __init__(self, plan: Plan, device: str, dtype: Any):
        self.plan, self.device, self.dtype = plan, device, dtype
        self.args = [make_tensors((s.args, s.kwargs), device, dtype) for s in plan.steps]  # Written stay

    def _bind(self, value: Any, live: dict[int, tuple[Any, int]]) -> Any:
        """`value` with every Written as the replayed output it names (made fresh when that is not there). Walked
        by hand, not with tree_map_only: this runs between the timed calls, and pytree's walk took ~3x as long."""
        if isinstance(value, Written):
            return _view(value, live) if value.storage in live else _tensor(value.fallback, self.device, self.dtype)
        if isinstance(value, (list, tuple)):
            return type(value)(self._bind(v, live) for v in value)
        if isinstance(value, dict):
            return {k: self._bind(v, live) for k, v in value.items()}
        return value

    def round(self, clock: Callable[[], float] | None = None) -> list[float]:
        """One pass over the calls; with `clock`, the seconds of each call (else nothing is timed)."""
        live: dict[int, tuple[Any, int]] = {}
        times = []
        for index, step in enumerate(self.plan.steps):
            args, kwargs = self._bind(self.args[index], live)
            if clock is None:
                out = step.func(*args, **kwargs)
            else:
                start = clock()
                out = step.func(*args, **kwargs)
                times.append(clock() - start)
            tensors = leaves(out)
            for leaf, sid, offset in step.outputs:
                live[sid] = (tensors[leaf], offset)
            for sid in self.plan.frees.get(index, ()):
                live.pop(sid, None)
            del args, kwargs, out, tensors
        return times


def _view(w: Written, live: dict[int, tuple[Any, int]]) -> Any:
    """The view of a replayed output that the network read (the same shape, strides and offset into the same
    storage), or a fresh tensor when it would not fit in that storage."""
    import torch

    base, written_offset = live[w.storage]
    offset = base.storage_offset() + w.offset - written_offset
    if offset < 0 or offset + _storage(w) > base.untyped_storage().nbytes() // base.element_size():
        return torch.empty_strided(w.shape, w.stride, device=base.device, dtype=base.dtype).normal_()
    return base.as_strided(w.shape, w.stride, offset)


def time_in_order(plan: Plan, device: str, dtype: Any, keys: set[str], min_time: float,
                  clock: Callable[[], float]) -> dict[str, float]:
    """Seconds of every call whose key is in `keys`, replayed in order (WARMUP_ROUNDS untimed, then rounds until
    MIN_ROUNDS and `min_time` seconds of timed calls): the mean of its calls in the typical rounds
    (`typical_rounds`). Ctrl-C after a timed round keeps what was timed."""
    import torch

    from cnnprof.timing.timer import gc_paused

    replay, timed, spent = Replay(plan, device, dtype), [], 0.0
    with torch.inference_mode(), gc_paused():
        for _ in range(WARMUP_ROUNDS):
            replay.round()
        while len(timed) < MIN_ROUNDS or spent < min_time:
            try:
                times = replay.round(clock)
            except KeyboardInterrupt:
                break
            timed.append(times)
            spent += sum(times)
    return mean_per_key(plan, keys, typical_rounds(timed))


def typical_rounds(rounds: list[list[float]]) -> list[list[float]]:
    """The middle half of `rounds` by their total time (all of them when fewer than 4). A round slowed as a whole
    (the machine busy elsewhere) is left out; what is uneven within a round (a call that waits for a thread to
    wake, or for memory) stays in, as it does in the network's own forward passes. So the mean of a call over
    these rounds adds up to a typical round, where the sum of per-call medians came out 3-5% short of it at 2
    threads (right-skewed calls: googlenet, densenet121, regnet_y_1_6gf, ghostnet_100 at batch 1)."""
    if len(rounds) < 4:
        return rounds
    ordered, quarter = sorted(rounds, key=sum), len(rounds) // 4
    return ordered[quarter:len(rounds) - quarter]


def mean_per_key(plan: Plan, keys: set[str], rounds: list[list[float]]) -> dict[str, float]:
    """The mean seconds of the calls of each key in `keys` (over its call sites and `rounds`)."""
    samples = defaultdict(list)
    for times in rounds:
        for step, t in zip(plan.steps, times):
            if step.key in keys:
                samples[step.key].append(t)
    return {key: statistics.fmean(ts) for key, ts in samples.items()}
