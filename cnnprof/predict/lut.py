"""A per-device lookup table of measured layers, filled on demand (FBNet's and ProxylessNAS's latency tables,
nn-Meter's kernel measurements).

Every distinct op call of a model (an aten op with its argument shapes, strides and scalars: one conv, one
channel shuffle, one cat) is timed on this device: on the CPU inside the model's own sequence of calls, on its
data flow (cnnprof.predict.sequence); on CUDA, or when that replay would not fit in memory, alone, on tensors
colder than the last-level cache (cnnprof.predict.microbench). Its median time is kept under a key made of
what the traffic view of a trace knows about the call (op, type, output shape, window, groups, MACs, other ops,
bytes read and written). Any later prediction whose op calls have those keys uses the measured time; the calibrated
per-op-type model (cnnprof.predict.latency) prices the rest. The table is cached beside the device profile it
belongs to (same device, torch version, thread count and dtype); like a profile it is data only: keys map to
seconds, nothing in the file is run.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from itertools import cycle
from math import ceil
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils._python_dispatch import TorchDispatchMode

from cnnprof.counting.traffic import ELEMENT_BYTES, OpCall, TrafficCounter, op_calls
from cnnprof.predict import microbench, sequence
from cnnprof.predict.sequence import make_tensors as _make, spec as _spec
from cnnprof.predict.profile_file import ProfileError

MAX_BYTES = 16 << 20  # a table of the whole zoo at a few batch sizes is a few hundred kB
MAX_KEY = 300
MIN_TIME_S = 0.05  # seconds of timed calls per layer (at least MIN_RUNS calls)
MIN_RUNS = 5
# How the layers were timed; a cached table timed otherwise is measured again. 2: in the network's order, on the
# values of a fresh network, the mean over the typical rounds (cnnprof.predict.sequence).
METHOD = 2
ORDER_TIME_S = 1.0  # seconds of timed calls when a model's layers are timed in its order (cnnprof.predict.sequence)


def layer_key(call: OpCall) -> str:
    """What identifies a layer in the table: every shape fact and count the traffic view records of it."""
    shape = "x".join(map(str, call.shape))
    kernel = "x".join(map(str, call.kernel))
    return (f"{call.op}|{call.type}|{shape}|k{kernel}|g{call.groups}|m{call.macs}|o{call.ops}|"
            f"r{call.bytes_read}|w{call.bytes_written}")


@dataclass
class LayerTable:
    """Measured seconds per layer key on one device at one thread count and dtype (see the module docstring)."""

    device: str
    dtype: str
    threads: int
    times: dict[str, float] = field(default_factory=dict)
    module_overhead_s: float | None = None  # a module call inside a network, beyond its ops (measure_module_overhead)
    path: Path | None = None  # where it is cached (None: this run only)
    measured_now: int = 0  # layers measured by this process (the cache is written when > 0)
    on_demand: bool = False  # predictions measure the layers they miss (cnnprof.predict.latency.measure_layers)
    on_step: Callable[[str, int, int], None] | None = field(default=None, compare=False)
    warn: Callable[[str], None] | None = field(default=None, compare=False)

    def lookup(self, call: OpCall) -> float | None:
        """Measured seconds of `call`, or None when that layer was never measured here."""
        return self.times.get(layer_key(call))

    def to_json(self) -> dict[str, Any]:
        return {"method": METHOD, "device": self.device, "dtype": self.dtype, "threads": self.threads,
                "module_overhead_s": self.module_overhead_s, "layers": dict(self.times)}


# ----------------------------------------------------------------------------- recording a model's layers

@dataclass(frozen=True)
class Layer:
    """One distinct op call of a model: its key, its cost facts and how to run it alone."""

    key: str
    call: OpCall
    func: Any  # the aten OpOverload
    args: tuple
    kwargs: dict

    def make(self, device: str, dtype: Any) -> Callable[[], Any]:
        """The op on fresh tensors of the recorded shapes on `device` (floating ones at `dtype`)."""
        args, kwargs = _make(self.args, device, dtype), _make(self.kwargs, device, dtype)
        return lambda: self.func(*args, **kwargs)


class _Recorder(TorchDispatchMode):
    """Runs a forward pass on meta and keeps every priced op or copy with the arguments it was called with."""

    def __init__(self, element_bytes: int):
        super().__init__()
        self.counter = TrafficCounter(None, element_bytes)
        self.layers: dict[str, Layer] = {}
        self.order: list[str] = []  # the key of every call, in execution order
        self.plan = sequence.Plan(element_bytes)  # the calls with their data flow, to replay them in order

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never under torch.compile; avoids importing torch._dynamo

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from cnnprof.counting.meta_fast import fast_meta

        kwargs = kwargs or {}
        out = fast_meta(func.overloadpacket.__name__, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        event = self.counter.record(func, args, kwargs, out)
        if event is not None:  # a priced op or a copy (views and allocations move nothing)
            call = op_calls([event], self.counter.element_bytes)[0]
            key = layer_key(call)
            if key not in self.layers:
                self.layers[key] = Layer(key, call, func, *_spec(func, args, kwargs))
            self.order.append(key)
            self.plan.add(key, func, args, kwargs, out)
        return out


def record_layers(model: Any, inputs: Any = None, dtype: str = "float32") -> list[Layer]:
    """Every distinct layer of one forward pass of `model` (nn.Module or source; `inputs` as in count_flops),
    recorded on meta in execution order."""
    return list(_record(model, inputs, dtype).layers.values())


def _record(model: Any, inputs: Any, dtype: str) -> _Recorder:
    """A recorder that saw one forward pass of `model` on meta."""
    import torch

    from cnnprof.counting.meta_fast import cheap_checks
    from cnnprof.counting.run import _forward, dense_attention
    from cnnprof.counting.source import as_source
    from cnnprof.counting.state import untouched
    from cnnprof.inputs import make_inputs

    source = as_source(model)
    net = source.module if source.module is not None else source.build("meta")
    args, kwargs = make_inputs(*source.inputs(net, inputs))
    recorder = _Recorder(ELEMENT_BYTES[dtype])
    with untouched(net):
        net.eval()
        with torch.no_grad(), cheap_checks(), dense_attention(), recorder:
            _forward(net, args, kwargs, on_meta=True)
    recorder.plan.finish()
    return recorder


# ----------------------------------------------------------------------------- measuring

def measure_layer(layer: Layer, device: str, dtype: str, min_time: float = MIN_TIME_S,
                  timer: Callable[..., float] | None = None) -> float:
    """Median seconds of `layer` alone on `device`, cycling through enough copies of its tensors to overflow
    the last-level cache (in a network an op's weights were last touched a whole forward pass ago)."""
    from cnnprof.predict.device import time_call
    from cnnprof.timing.settings import DTYPES

    timer = timer or time_call
    copies = max(1, min(microbench.MAX_COPIES, ceil(microbench.cold_bytes(device) / max(layer.call.bytes, 1))))
    fns = cycle([layer.make(device, DTYPES[dtype]) for _ in range(copies)])
    return timer(lambda: next(fns)(), device, min_time=min_time, min_runs=MIN_RUNS, warmup=2)


def fill(table: LayerTable, layers: Sequence[Layer], *, on_step: Callable[[str, int, int], None] | None = None,
         min_time: float = MIN_TIME_S, timer: Callable[..., float] | None = None) -> int:
    """Measure every layer of `layers` not yet in `table` (at the current thread count); returns how many were
    measured. Ctrl-C stops early and keeps what was measured."""
    todo = [layer for layer in layers if layer.key not in table.times]
    for i, layer in enumerate(todo):
        if on_step:
            on_step(f"{layer.call.op} {'x'.join(map(str, layer.call.shape))}", i, len(todo))
        try:
            t = measure_layer(layer, table.device, table.dtype, min_time, timer)
        except KeyboardInterrupt:
            break
        except Exception:  # noqa: BLE001 - no kernel at this dtype here, or values it cannot take: the model prices it
            continue
        if math.isfinite(t) and t > 0:
            table.times[layer.key] = t
            table.measured_now += 1
    return table.measured_now


# ----------------------------------------------------------------------------- the cache

def table_path(device: str, dtype: str) -> Path:
    """The table's cache file: beside the device profile of this device, torch version, threads and dtype."""
    from cnnprof.predict.device import cache_path

    profile = cache_path(device, dtype)
    return profile.with_name(f"layers-{profile.name}")


def _checked(data: Any, what: str) -> dict[str, float]:
    """The layer times of a table file, every key and time checked."""
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, dict):
        raise ProfileError(f"{what}: expected an object with a `layers` mapping of layer to seconds")
    out = {}
    for key, value in layers.items():
        if not isinstance(key, str) or len(key) > MAX_KEY:
            raise ProfileError(f"{what}: a layer key is not a name of at most {MAX_KEY} characters")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ProfileError(f"{what}: layers.{key[:60]}: expected a positive number of seconds, got {value!r}")
        out[key] = float(value)
    return out


def _overhead(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ProfileError(f"{what}: module_overhead_s: expected a non-negative number of seconds, got {value!r}")
    return float(value)


def load_table(device: str, dtype: str = "float32", warn: Callable[[str], None] | None = None) -> LayerTable:
    """The cached table of `device` at this thread count and `dtype` (empty when there is none, or when the
    file is bad: `warn` hears why, and it is measured again)."""
    import torch

    from cnnprof.models.yaml_input import read_regular

    path = table_path(device, dtype)
    table = LayerTable(device, dtype, torch.get_num_threads(), path=path)
    if not os.path.lexists(path):
        return table
    try:
        raw = read_regular(path, MAX_BYTES, str(path), "layer table", "JSON", ProfileError)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise ProfileError(f"{path}: not JSON ({type(exc).__name__})") from None
        times, overhead = _checked(data, str(path)), _overhead(data.get("module_overhead_s"), str(path))
        method = data.get("method", 1)
        if method != METHOD or type(method) is not int:
            shown = method if type(method) is int else "unknown"  # the file's value never reaches the terminal
            raise ProfileError(f"{path}: timed by another cnnprof (method {shown}, now {METHOD}); its layers are "
                               "measured again")
        table.times, table.module_overhead_s = times, overhead
    except ProfileError as exc:
        if warn is not None:
            warn(f"ignoring the cached layer table: {exc}")
    return table


def save_table(table: LayerTable, warn: Callable[[str], None] | None = None) -> Path | None:
    """Write `table` to its cache file (atomically); None when it cannot be written (`warn` hears why)."""
    if table.path is None:
        return None
    tmp = table.path.with_name(f"{table.path.name}.tmp{os.getpid()}")
    try:
        table.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(table.to_json()))
        os.replace(tmp, table.path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if warn is not None:
            warn(f"cannot cache the layer table in {table.path.parent}: {exc.strerror or exc}")
        return None
    return table.path


def measure_in_order(recorder: _Recorder, device: str, dtype: str, keys: set[str],
                     min_time: float = ORDER_TIME_S) -> dict[str, float | None]:
    """Median seconds of each layer in `keys`, timed inside the recorded model's sequence of calls."""
    from cnnprof.timing import timer
    from cnnprof.timing.settings import DTYPES

    return sequence.time_in_order(recorder.plan, device, DTYPES[dtype], keys, min_time, timer.CLOCK[0])


def fill_in_order(table: LayerTable, recorder: _Recorder, *, on_step: Callable[[str, int, int], None] | None = None,
                  min_time: float = ORDER_TIME_S) -> int:
    """Measure every layer of a recorded model not yet in `table` inside the model's own sequence of calls
    (cnnprof.predict.sequence: CPU only, when the replay fits in sequence.MAX_BYTES; else each layer alone, as on
    CUDA, where timing calls one by one would serialise what a network overlaps); returns how many were new."""
    before = table.measured_now
    todo = {key for key in recorder.order if key not in table.times}
    if not todo:
        return 0
    alone = [layer for key, layer in recorder.layers.items() if key in todo]
    if table.device != "cpu" or recorder.plan.bytes > sequence.MAX_BYTES:
        return fill(table, alone, on_step=on_step) - before
    if on_step:
        on_step(f"{len(todo)} layers in their network's order", 0, len(todo))
    try:
        times = measure_in_order(recorder, table.device, table.dtype, todo, min_time)
    except Exception:  # noqa: BLE001 - an op with no kernel at this dtype here: each layer alone, as fill skips it
        return fill(table, alone, on_step=on_step) - before
    for key, t in times.items():
        if t is not None and math.isfinite(t) and t > 0:
            table.times[key] = t
            table.measured_now += 1
    return table.measured_now - before


def measure_model(table: LayerTable, model: Any, inputs: Any = None, *,
                  on_step: Callable[[str, int, int], None] | None = None, min_time: float = ORDER_TIME_S,
                  warn: Callable[[str], None] | None = None, view_overhead_s: float = 0.0) -> int:
    """Fill `table` with every layer of `model` not measured yet (and, the first time, the in-network module
    overhead) and cache it; returns how many layers were new."""
    before = table.measured_now
    try:
        recorder = _record(model, inputs, table.dtype)
    except Exception as exc:  # noqa: BLE001 - the user's forward on meta (a model counted by a real run): not timed
        if warn is not None:
            warn(f"the layers of this model were not timed (it does not run on meta: {type(exc).__name__}); the "
                 f"calibrated model prices them")
        return 0
    fill_in_order(table, recorder, on_step=on_step, min_time=min_time)
    new, overhead_missing = table.measured_now - before, table.module_overhead_s is None
    if overhead_missing:
        table.module_overhead_s = measure_module_overhead(table.device, table.dtype, view_overhead_s)
    if new or overhead_missing:
        save_table(table, warn)
    return new


# ----------------------------------------------------------------------------- what no single layer holds

def tiny_network(blocks: int, c: int) -> Any:
    """Tiny mobile blocks (1x1 conv, BN, hardswish, depthwise 3x3, BN, ReLU, residual add) on small maps: their
    ops take microseconds, so a forward pass is nearly all per-call cost."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.Hardswish(),
                                      nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c),
                                      nn.ReLU(inplace=True))

        def forward(self, x: Any) -> Any:
            return x + self.body(x)

    return nn.Sequential(*[Block() for _ in range(blocks)]).eval()


def measure_module_overhead(device: str, dtype: str = "float32", view_overhead_s: float = 0.0, *, blocks: int = 20,
                            channels: int = 8, min_time: float = 0.3,
                            gap: Callable[..., float] | None = None) -> float:
    """Seconds a module call adds inside a network beyond its ops (Python's module call, functional wrappers and
    the composite ops above the kernels, which a replayed or lone op call skips): a synthetic network's forward
    pass less its op calls replayed in order (cnnprof.predict.sequence; on the CPU the calls' own times), timed in
    alternation (predict.device.time_gap), less its views, per module call. Synthetic, so no model it later
    predicts is part of it."""
    import torch

    from cnnprof.counting.traffic import analyze_memory
    from cnnprof.predict.device import time_gap
    from cnnprof.timing import timer
    from cnnprof.timing.settings import DTYPES

    gap = gap or time_gap
    shape = (1, channels, 4, 4)
    net = tiny_network(blocks, channels).to(device=device, dtype=DTYPES[dtype])
    x = torch.rand(shape, device=device, dtype=DTYPES[dtype])
    replay = sequence.Replay(_record(net, (shape,), dtype).plan, device, DTYPES[dtype])
    with torch.inference_mode():
        if device == "cpu":  # the calls' own times, as the table holds them (not the replay's bookkeeping)
            seconds = gap(lambda: net(x), lambda: sum(replay.round(timer.CLOCK[0])), device, min_time=min_time,
                          b_times_itself=True)
        else:  # launches are asynchronous: the whole replay, as a network's forward pass is timed
            seconds = gap(lambda: net(x), replay.round, device, min_time=min_time)
    memory = analyze_memory(net, shape, dtype)
    return max(0.0, (seconds - memory.free_calls * view_overhead_s) / max(memory.modules_called, 1))


def attach(profile: Any, *, on_demand: bool = False, on_step: Callable[[str, int, int], None] | None = None,
           warn: Callable[[str], None] | None = None) -> Any:
    """`profile` with this device's cached layer table attached, when the profile was measured here at the current
    thread count (a datasheet or a profile file describes another machine: nothing is attached)."""
    import dataclasses

    import torch

    if profile.source != "measured" or profile.threads != torch.get_num_threads():
        return profile
    table = load_table(profile.device, profile.calibration_dtype, warn)
    table.on_demand, table.on_step, table.warn = on_demand, on_step, warn
    return dataclasses.replace(profile, layers=table)
