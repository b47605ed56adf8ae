"""Memory traffic and arithmetic intensity of every op, counted on the meta device.

Traffic model (ideal cache: every tensor an op touches is moved once per op, nothing is reused
across ops): bytes read = every tensor argument (inputs, weights, bias, norm statistics) and bytes
written = the op's (first) output, each at the run's element size. Views move nothing; copies
(cat, stack, clone / contiguous, padding, channel shuffle) read their inputs and write their output.
Intensity = FLOPs / byte in the hardware convention: 1 MAC = 2 FLOPs, plus the other elementary
ops of formulas.py (scope "all"), because a roofline compares against the hardware's FMA peak.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from cnnprof.counting.acts import op_acts
from cnnprof.counting.flops import OpCounter, _ModuleTracker, parse_shape, trace
from cnnprof.counting.formulas import Cost, op_name
from cnnprof.counting.source import as_source
from cnnprof.counting.types import type_sort_key
from cnnprof.errors import CnnprofError

ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
COPY_OPS = frozenset(("cat", "stack", "clone", "contiguous", "copy", "_to_copy", "constant_pad_nd", "pad",
                      "channel_shuffle", "pixel_shuffle", "reflection_pad2d", "replication_pad2d"))
COPY_TYPE = "memory copy"


class _Traffic:
    """FLOPs, bytes and intensity of anything with macs, ops, bytes_read and bytes_written."""

    @property
    def flops(self) -> int:
        """Hardware-convention FLOPs: 2 per MAC plus the other ops."""
        return 2 * self.macs + self.ops

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved (hardware convention)."""
        return self.flops / self.bytes if self.bytes else 0.0


@dataclass(frozen=True)
class OpCall(_Traffic):
    """One executed op: its cost, traffic and the shape facts the latency model looks up."""

    module: str
    op: str
    type: str
    macs: int
    ops: int
    acts: int
    bytes_read: int
    bytes_written: int
    shape: tuple[int, ...] = ()  # output shape
    kernel: tuple[int, ...] = ()  # conv / pool window
    groups: int = 1


@dataclass(frozen=True)
class TrafficShare(_Traffic):
    """Totals of a group of op calls (a layer type, a stage, a module or the model)."""

    name: str
    macs: int
    ops: int
    acts: int
    bytes_read: int
    bytes_written: int
    calls: int


@dataclass(frozen=True)
class MemoryProfile:
    """Every op call of one forward pass with its traffic; totals by type, stage, module and op."""

    model: str
    input_shape: tuple[int, ...]
    dtype: str
    calls: tuple[OpCall, ...]
    modules_called: int  # module forward calls (Python overhead the latency model charges)
    module_names: tuple[str, ...]
    uncounted: tuple[tuple[str, int], ...] = field(default=())
    free_calls: int = 0  # views and other data-free ops: no traffic, but each one is dispatched

    def _group(self, key) -> list[TrafficShare]:
        acc: dict[str, list[int]] = defaultdict(lambda: [0] * 6)
        for c in self.calls:
            a = acc[key(c)]
            for i, v in enumerate((c.macs, c.ops, c.acts, c.bytes_read, c.bytes_written, 1)):
                a[i] += v
        return [TrafficShare(k, *v) for k, v in acc.items()]

    def total(self) -> TrafficShare:
        """The whole model."""
        rows = self._group(lambda c: self.model)
        return rows[0] if rows else TrafficShare(self.model, 0, 0, 0, 0, 0, 0)

    @property
    def acts(self) -> int:
        return self.total().acts

    @property
    def bytes(self) -> int:
        return self.total().bytes

    def by_type(self) -> list[TrafficShare]:
        return sorted(self._group(lambda c: c.type), key=lambda s: type_sort_key(s.name))

    def by_op(self) -> list[TrafficShare]:
        return sorted(self._group(lambda c: c.op), key=lambda s: -s.bytes)

    def by_stage(self) -> list[TrafficShare]:
        shares = {s.name: s for s in self._group(lambda c: c.module.split(".")[0] or "(root)")}
        order = [n for n in self.module_names if n and "." not in n] + ["(root)"]
        return [shares[n] for n in order if n in shares]

    def by_layer(self) -> list[TrafficShare]:
        """Per module (exclusive of children), in execution order."""
        order = list(dict.fromkeys(c.module or "(root)" for c in self.calls))
        shares = {s.name: s for s in self._group(lambda c: c.module or "(root)")}
        return [shares[n] for n in order]


def _tensors(value: Any):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) and out else out


def op_traffic(args: tuple, kwargs: dict, out: Any, element_bytes: int) -> tuple[int, int]:
    """(bytes read, bytes written) of one op: every tensor argument once, the first output once."""
    read = sum(t.numel() for t in _tensors(args)) + sum(t.numel() for t in _tensors(tuple(kwargs.values())))
    first = _first(out)
    written = first.numel() if isinstance(first, torch.Tensor) else 0
    return read * element_bytes, written * element_bytes


def _kernel_groups(name: str, cost_type: str, args: tuple, kwargs: dict) -> tuple[tuple[int, ...], int]:
    if cost_type.startswith("conv ") or cost_type.endswith(" conv"):
        w = args[1]
        groups = args[8] if len(args) > 8 else (args[6] if len(args) > 6 and not isinstance(args[6], bool)
                                                 else kwargs.get("groups", 1))
        return tuple(w.shape[2:]), int(groups)
    if "pool" in name and len(args) > 1 and not name.startswith(("adaptive", "_adaptive")):
        k = args[1]
        return (tuple(k) if isinstance(k, (list, tuple)) else (k,)), 1
    return (), 1


class TrafficCounter(OpCounter):
    """OpCounter that also keeps every op call with its bytes moved and acts."""

    def __init__(self, tracker: _ModuleTracker | None, element_bytes: int):
        super().__init__(tracker)
        self.element_bytes = element_bytes
        self.calls: list[OpCall] = []
        self.free_calls = 0

    def record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> Cost | None:
        cost = super().record(func, args, kwargs, out)
        name = op_name(func)
        base = name.rstrip("_")
        if cost is None and base not in COPY_OPS:
            self.free_calls += 1
            return cost  # views, allocations (free) and uncounted ops (reported by OpCounter)
        cost = cost or Cost(COPY_TYPE, 0, 0)
        read, written = op_traffic(args, kwargs, out, self.element_bytes)
        if base in ("clone", "contiguous", "copy", "_to_copy") and name.endswith("_"):
            read = written  # copy_(dst, src): the destination is only written
        first = _first(out)
        kernel, groups = _kernel_groups(base, cost.type, args, kwargs)
        self.calls.append(OpCall(
            module=self.tracker.current if self.tracker else "", op=base, type=cost.type, macs=cost.macs,
            ops=cost.ops, acts=op_acts(name, cost.type, out), bytes_read=read, bytes_written=written,
            shape=tuple(first.shape) if isinstance(first, torch.Tensor) else (), kernel=kernel, groups=groups))
        return cost


def analyze_memory(model: Any, input_shape: Sequence[int] | None = None, dtype: str = "float32",
                   inputs: Any = None) -> MemoryProfile:
    """Traffic, intensity and acts of every op of one forward pass, on the meta device (`model`: an nn.Module
    or a source; inputs as in count_flops: one `input_shape`, or `inputs`, or the model's declared input)."""
    if dtype not in ELEMENT_BYTES:
        raise CnnprofError(f"unknown dtype {dtype!r}; choose one of {', '.join(ELEMENT_BYTES)}")
    source = as_source(model)
    if input_shape is not None:
        inputs = (parse_shape(input_shape, ()),)
    called = [0]
    handle = nn.modules.module.register_module_forward_pre_hook(lambda *_: called.__setitem__(0, called[0] + 1))
    try:
        counter, _, net, specs, _ = trace(source, inputs, lambda tracker: TrafficCounter(tracker, ELEMENT_BYTES[dtype]))
    finally:
        handle.remove()
    return MemoryProfile(model=source.label, input_shape=specs[0].shape if specs else (), dtype=dtype,
                         calls=tuple(counter.calls), modules_called=called[0],
                         module_names=tuple(n for n, _ in net.named_modules()),
                         uncounted=tuple(sorted(counter.uncounted.items())), free_calls=counter.free_calls)
