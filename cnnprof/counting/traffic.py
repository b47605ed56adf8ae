"""Memory traffic and arithmetic intensity of every op, counted on the meta device.

Traffic model (ideal cache: every tensor an op touches is moved once per op, nothing is reused
across ops): bytes read = every tensor argument (inputs, weights, bias, norm statistics) and bytes
written = the op's (first) output, each at the run's element size. Views move nothing; copies
(cat, stack, clone / contiguous, padding, channel shuffle) read their inputs and write their output.
Intensity = FLOPs / byte in the nvidia convention: 1 MAC = 2 FLOPs, plus the other elementary ops of
formulas.py (scope "all"), because a roofline compares against the device's FMA peak (2 FLOPs per FMA).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


from cnnprof.counting.conventions import MAC_FLOPS
from cnnprof.counting.group import ROOT, in_stage_order, stage_of, totals
from cnnprof.counting.run import parse_shape, trace_model
from cnnprof.counting.trace import COPY_OPS, COPY_TYPE, OpEvent, Trace, Tracer
from cnnprof.counting.types import type_sort_key
from cnnprof.errors import CnnprofError

ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
__all__ = ["COPY_OPS", "COPY_TYPE", "ELEMENT_BYTES", "MemoryProfile", "OpCall", "TrafficShare", "analyze_memory",
           "memory_profile", "op_calls", "TrafficCounter"]


class _Traffic:
    """FLOPs, bytes and intensity of anything with macs, ops, bytes_read and bytes_written."""

    @property
    def flops(self) -> int:
        """FLOPs in the nvidia convention: 2 per MAC plus the other ops."""
        return MAC_FLOPS["nvidia"] * self.macs + self.ops

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved (nvidia convention)."""
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
        sums = totals(self.calls, lambda c: (key(c),),
                      lambda c: (c.macs, c.ops, c.acts, c.bytes_read, c.bytes_written, 1))
        return [TrafficShare(k, *v) for k, v in sums.items()]

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
        return in_stage_order({s.name: s for s in self._group(lambda c: stage_of(c.module))}, self.module_names)

    def by_layer(self) -> list[TrafficShare]:
        """Per module (exclusive of children), in execution order."""
        return self._group(lambda c: c.module or ROOT)


def op_calls(events: Sequence[OpEvent], element_bytes: int) -> tuple[OpCall, ...]:
    """The traffic view of op events: every priced op and copy with its bytes at `element_bytes` per element."""
    return tuple(OpCall(module=e.module, op=e.op, type=e.op_type, macs=e.macs, ops=e.ops, acts=e.acts,
                        bytes_read=e.elements_read * element_bytes, bytes_written=e.elements_written * element_bytes,
                        shape=e.shape, kernel=e.kernel, groups=e.groups) for e in events)


def memory_profile(trace: Trace, dtype: str = "float32") -> MemoryProfile:
    """The traffic view of an op trace, every tensor element at the size of `dtype`."""
    if dtype not in ELEMENT_BYTES:
        raise CnnprofError(f"unknown dtype {dtype!r}; choose one of {', '.join(ELEMENT_BYTES)}")
    if not trace.traffic:
        raise ValueError("this trace did not record what its ops moved: trace with traffic=True")
    return MemoryProfile(model=trace.label, input_shape=trace.input_shape, dtype=dtype,
                         calls=op_calls(trace.events, ELEMENT_BYTES[dtype]), modules_called=trace.modules_called,
                         module_names=trace.module_names, uncounted=trace.uncounted, free_calls=trace.free_calls)


def analyze_memory(model: Any, input_shape: Sequence[int] | None = None, dtype: str = "float32",
                   inputs: Any = None) -> MemoryProfile:
    """Traffic, intensity and acts of every op of one forward pass, on the meta device (`model`: an nn.Module
    or a source; inputs as in count_flops: one `input_shape`, or `inputs`, or the model's declared input)."""
    if dtype not in ELEMENT_BYTES:
        raise CnnprofError(f"unknown dtype {dtype!r}; choose one of {', '.join(ELEMENT_BYTES)}")
    if input_shape is not None:
        inputs = (parse_shape(input_shape, ()),)
    return memory_profile(trace_model(model, inputs), dtype)


class TrafficCounter(Tracer):
    """A tracer over any function (not a model: no module paths) whose events are read as OpCalls."""

    def __init__(self, tracker: Any = None, element_bytes: int = 4):
        super().__init__(tracker)
        self.element_bytes = element_bytes

    @property
    def calls(self) -> tuple[OpCall, ...]:
        return op_calls(self.events, self.element_bytes)
