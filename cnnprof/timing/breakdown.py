"""Per layer type: the measured time and the counted MACs of a forward pass (bench's breakdown).

Every aten op of a few real forward passes is timed with the device clock of the one measurement loop
(perf_counter on the CPU, CUDA events read after a synchronisation) and priced with the FLOP formulas;
the passes themselves are samples of that loop (at least 3, for `min_time` wall seconds, at most 50).
"""
from __future__ import annotations

from typing import Any, Callable

from torch.utils._python_dispatch import TorchDispatchMode

from cnnprof.counting.formulas import lookup
from cnnprof.counting.group import totals
from cnnprof.counting.types import type_sort_key
from cnnprof.timing.results import TypeTiming
from cnnprof.timing.timer import StopRule, device_clock, measure

MIN_PASSES, MAX_PASSES = 3, 50


class OpTimer(TorchDispatchMode):
    """Times every aten op of real forward passes and prices it with the FLOP formulas."""

    def __init__(self, device: str):
        super().__init__()
        self.clock = device_clock(device)
        self.timed: list[tuple[str, int, int, float]] = []  # (type, macs, ops, seconds) of every op run
        self.pending: list[tuple[str, int, int, Any, Any]] = []

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never used under torch.compile; avoids importing torch._dynamo

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        start = self.clock.mark()
        out = func(*args, **kwargs)
        end = self.clock.mark()
        formula, _ = lookup(func)
        cost = formula(args, kwargs, out) if formula else None
        layer_type = cost.type if cost else "other"
        self.pending.append((layer_type, cost.macs if cost else 0, cost.ops if cost else 0, start, end))
        return out

    def flush(self) -> None:
        """Read the pending timings (after a synchronisation of the device) into the per-type totals."""
        self.clock.sync()
        self.timed += [(layer_type, macs, ops, self.clock.elapsed(start, end))
                       for layer_type, macs, ops, start, end in self.pending]
        self.pending.clear()


def breakdown(call: Callable[[], Any], device: str, min_time: float) -> tuple[TypeTiming, ...]:
    """Per layer type: MACs and measured time of one forward pass of `call`, averaged over a few passes."""
    timer = OpTimer(device)

    def one_pass() -> None:
        with timer:
            call()

    rule = StopRule(min_time=min_time, min_runs=MIN_PASSES, max_runs=MAX_PASSES, wall=True)
    runs = measure(one_pass, device, rule, sync_each=True).runs
    timer.flush()
    sums = totals(timer.timed, lambda t: (t[0],), lambda t: (t[1], t[2], t[3], 1))
    rows = [TypeTiming(k, int(v[0] // runs), int(v[1] // runs), v[2] / runs, int(v[3] // runs)) for k, v in sums.items()]
    return tuple(sorted(rows, key=lambda r: type_sort_key(r.type)))
