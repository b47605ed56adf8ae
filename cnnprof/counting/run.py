"""Running a model once under the op tracer: on meta tensors, or once for real on the CPU when it cannot.

A CPU model is traced through meta stand-ins of its weights (torch.func.functional_call), never moved,
copied or modified; its train/eval modes are restored afterwards. A model that cannot run on meta
(data-dependent ops such as nonzero, `.item()`) runs once on real CPU tensors, and the trace says so.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from cnnprof.counting.meta_fast import cheap_checks
from cnnprof.counting.params import total_params
from cnnprof.counting.source import as_source
from cnnprof.counting.state import check_initialised, untouched
from cnnprof.counting.trace import FormulaError, ModuleTracker, Trace, Tracer, first_shape
from cnnprof.errors import CnnprofError, InputShapeError, first_line, parameter
from cnnprof.inputs import InputSpec, as_specs, check_shape, describe, make_inputs


def parse_shape(shape: Sequence[int] | None, default: Sequence[int]) -> tuple[int, ...]:
    """Validate an input shape (all positive integers)."""
    shape = tuple(default if shape is None else shape)
    if not shape:
        raise CnnprofError(f"input shape must be positive integers like 1,3,224,224, got {shape}")
    return check_shape(shape)


def _meta_failure(exc: BaseException) -> bool:
    """True when an exception means 'this cannot run on meta tensors' (no kernel, reads values)."""
    return isinstance(exc, NotImplementedError) or "meta" in str(exc).lower()


# Words of torch's shape-mismatch messages ("size mismatch", "Expected ... channels", "mat1 and mat2 shapes").
_SHAPE_WORDS = re.compile(r"\b(size|sizes|shape|shapes|dimension|dimensions|channels|dims?)\b", re.IGNORECASE)
_SET_INPUTS = f"{parameter('input_shape')} / {parameter('inputs')}"


def forward_error(label: str, specs: Sequence[InputSpec], exc: BaseException) -> CnnprofError:
    """The user's model failed: its own one-line message, and which parameter sets its inputs."""
    msg = f"{type(exc).__name__}: {first_line(exc)}"
    if isinstance(exc, TypeError) and ("argument" in str(exc) or "forward()" in str(exc)):
        return InputShapeError(f"{label}: forward({describe(specs)}) failed: {msg}; its inputs are set by "
                               f"{parameter('input_shape')} (once per positional input) and "
                               f"{parameter('inputs', 'NAME=SHAPE[:DTYPE]')}")
    if isinstance(exc, (RuntimeError, ValueError, IndexError)) and _SHAPE_WORDS.search(str(exc)):
        given = f"shape {specs[0].shape}" if len(specs) == 1 and specs[0].is_float else describe(specs)
        return InputShapeError(f"{label}: does not fit input {given}: {first_line(exc)} (set the inputs with "
                               f"{_SET_INPUTS})")
    return InputShapeError(f"{label}: forward({describe(specs)}) failed: {msg} (if these are not the inputs it "
                           f"expects, set them with {_SET_INPUTS})")


def stand_ins(net: nn.Module) -> dict[str, torch.Tensor]:
    """Meta tensors like every parameter and buffer of `net` (nothing allocated, nothing copied)."""
    named = list(net.named_parameters(remove_duplicate=False)) + list(net.named_buffers(remove_duplicate=False))
    made: dict[int, torch.Tensor] = {}  # a tensor shared by two modules gets one stand-in
    for _, t in named:  # empty_strided, not empty_like: across devices that goes through a Python decomposition
        if id(t) not in made:
            made[id(t)] = t if t.is_meta else torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    return {name: made[id(t)] for name, t in named}


def is_meta(net: nn.Module) -> bool:
    """Whether every parameter and buffer of `net` is on the meta device."""
    return all(t.is_meta for t in net.parameters()) and all(t.is_meta for t in net.buffers())


def _forward(net: nn.Module, args: tuple, kwargs: dict, on_meta: bool) -> Any:
    from torch.func import functional_call

    if on_meta and not is_meta(net):
        return functional_call(net, stand_ins(net), args, kwargs, tie_weights=True, strict=False)
    return net(*args, **kwargs)


def raise_internal(bug: FormulaError) -> None:
    """Re-raise the error a formula raised as itself, marked as cnnprof's own bug (an internal error, not the
    user's model failing)."""
    original = bug.__cause__
    original._cnnprof_internal = True
    raise original from None


@contextlib.contextmanager
def dense_attention():
    """Off while counting: the nested-tensor fast path of nn.MultiheadAttention / TransformerEncoder in eval
    mode (a key padding mask turns the input into a NestedTensor, which has no meta sizes). The dense math
    path is counted instead, padded positions included, as in training."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    enabled = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(enabled)


def traced_run(net: nn.Module, args: tuple, kwargs: dict, on_meta: bool, units: Mapping | None = None,
               formulas: Mapping | None = None, traffic: bool = True) -> tuple[Tracer, ModuleTracker, int]:
    """One forward under the tracer: on meta (a CPU module through meta stand-ins, not a copy) or real.
    Returns (tracer, module tracker, module forward calls)."""
    with untouched(net):  # the run may leave meta tensors, counters or lazy weights behind: none stay
        tracker = ModuleTracker(net, units)
        tracer = Tracer(tracker, formulas, traffic)
        called = [0]
        counting = nn.modules.module.register_module_forward_pre_hook(lambda *_: called.__setitem__(0, called[0] + 1))
        net.eval()
        try:
            # no_grad, not inference_mode: under inference_mode FlopCounterMode-style counting sees nothing
            # (pytorch#126268); on meta tensors nothing is computed either way.
            with torch.no_grad(), cheap_checks(), dense_attention(), tracer:
                out = _forward(net, args, kwargs, on_meta)
            tracker.shapes[""] = [first_shape((args, kwargs)), first_shape(out)]
            if units:
                tracer.add_units(units)
        except FormulaError as bug:
            raise_internal(bug)
        finally:
            counting.remove()
            tracker.remove()
    return tracer, tracker, called[0]


def trace_model(model: Any, inputs: Any = None, *, formulas: Mapping | None = None, traffic: bool = True) -> Trace:
    """The op trace of one forward pass of `model` (an nn.Module or a source, see cnnprof.counting.source):
    on meta, or once for real on the CPU when it cannot run there (`Trace.method` says which). `formulas`:
    per-call overrides {op or module class: formula or (formula, scope)} (cnnprof.counting.units); `traffic`:
    also record what each op moves (for the traffic and latency views; counting alone does not need it)."""
    from cnnprof.counting.units import split_formulas

    overrides, units = split_formulas(formulas)
    overrides, units = overrides or None, units or None
    source = as_source(model)
    net = source.module if source.module is not None else source.build("meta")
    args, kwargs = source.inputs(net, inputs)
    specs = as_specs(args, kwargs)
    try:
        run = traced_run(net, *make_inputs(args, kwargs), on_meta=True, units=units, formulas=overrides,
                         traffic=traffic)
        method = "meta"
    except Exception as exc:  # noqa: BLE001 - the user's forward: theirs to report, or a reason to run for real
        if getattr(exc, "_cnnprof_internal", False):
            raise
        check_initialised(source.label, net)  # a lazy module fails on its shapeless weights: say so
        if not _meta_failure(exc):
            raise forward_error(source.label, specs, exc) from None
        _check_fits(source.label, net, specs, exc)
        net = _real_model(source, net, exc)
        run, method = _real_run(source.label, net, (args, kwargs), specs, units, overrides, traffic), "cpu"
    tracer, tracker, called = run
    return Trace(label=source.label, events=tuple(tracer.events), uncounted=tuple(sorted(tracer.uncounted.items())),
                 module_names=tuple(name for name, _ in net.named_modules()), module_shapes=tracker.shapes_table(),
                 inputs=specs, method=method, modules_called=called, free_calls=tracer.free_calls,
                 params=total_params(net), traffic=traffic)


def _real_run(label: str, net: nn.Module, inputs: tuple[tuple, dict], specs: Sequence[InputSpec],
              units: Mapping | None, formulas: Mapping | None, traffic: bool) -> tuple[Tracer, ModuleTracker, int]:
    try:
        return traced_run(net, *make_inputs(*inputs, real=True), on_meta=False, units=units, formulas=formulas,
                          traffic=traffic)
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "_cnnprof_internal", False):
            raise
        raise forward_error(label, specs, exc) from None


def _check_fits(label: str, net: nn.Module, specs: Sequence[InputSpec], exc: BaseException) -> None:
    """Refuse a real CPU run whose weights and inputs alone would take over a third of the free memory."""
    import os
    from math import prod

    need = sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])
    need += sum(prod(s.shape) * 8 for s in specs)
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not available on this platform: try anyway
        return
    if 3 * need > free:
        raise CnnprofError(f"{label}: cannot run on the meta device ({first_line(exc)}), and a real CPU run needs "
                           f"{need / 2**30:.1f} GiB for weights and inputs alone ({free / 2**30:.1f} GiB free); "
                           f"try a smaller {parameter('input_shape')}") from None


def _real_model(source: Any, net: nn.Module, exc: BaseException) -> nn.Module:
    """A CPU model for a real run: `net` itself if it has real weights (or no tensor at all: a dynamically
    quantized model keeps its weights packed, outside its parameters), else a fresh CPU build."""
    if not is_meta(net) or next(iter([*net.parameters(), *net.buffers()]), None) is None:
        return net
    rebuilt = source.rebuild("cpu")
    if rebuilt is None:
        raise CnnprofError(f"{source.label}: cannot run on the meta device ({first_line(exc)}); pass the model "
                           f"built on the CPU to count it with a real forward pass") from None
    return rebuilt
