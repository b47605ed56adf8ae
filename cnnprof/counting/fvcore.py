"""fvcore's JIT-traced count, a cross-check of the conv scope (`backend="fvcore"`), on real CPU tensors."""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from cnnprof.counting.flops import FlopCount, OpStat
from cnnprof.counting.run import forward_error, is_meta
from cnnprof.counting.types import module_type
from cnnprof.errors import CnnprofError, parameter
from cnnprof.inputs import as_specs, describe, make_inputs

_MATMULS = ("linear", "addmm", "matmul", "mm", "bmm")


def count_fvcore(source: Any, inputs: Any) -> FlopCount:
    """Conv-scope MACs of `source` (see cnnprof.counting.source) counted by fvcore's JitModelAnalysis."""
    net = source.module if source.module is not None and not is_meta(source.module) else source.rebuild("cpu")
    if net is None:
        raise CnnprofError(f"{source.label}: the fvcore backend runs real CPU tensors; pass the model built on "
                           f"the CPU")
    args, kwargs = source.inputs(net, inputs)
    specs = as_specs(args, kwargs)
    if kwargs:
        raise CnnprofError(f"{source.label}: the fvcore backend traces positional inputs only; drop "
                           f"{parameter('inputs', 'NAME=...')} or use {parameter('backend', 'torch')}")
    inclusive = _analyse(source.label, net, make_inputs(args, kwargs, real=True)[0], specs)
    modules = dict(net.named_modules())
    return FlopCount(
        model=source.label, input_shape=specs[0].shape if specs else (), scope="conv", backend="fvcore",
        records=_own_records(inclusive, modules), uncounted=(), module_names=tuple(modules), inputs=specs,
        method="cpu", params=sum(p.numel() for p in net.parameters()),
    )


def _analyse(label: str, net: nn.Module, args: tuple, specs) -> dict[str, dict[str, int]]:
    """fvcore's inclusive MACs per module and operator."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import scripts a function with the deprecated torch.jit
        from fvcore.nn.jit_analysis import JitModelAnalysis
        from fvcore.nn.jit_handles import (addmm_flop_jit, bmm_flop_jit, conv_flop_jit, linear_flop_jit,
                                           matmul_flop_jit)

    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    analysis = JitModelAnalysis(net, args).set_op_handle(
        "aten::_convolution", conv_flop_jit, "aten::addmm", addmm_flop_jit, "aten::linear", linear_flop_jit,
        "aten::matmul", matmul_flop_jit, "aten::mm", matmul_flop_jit, "aten::bmm", bmm_flop_jit,
    )
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation and tracer chatter
            return analysis.by_module_and_operator()
    except Exception as exc:  # noqa: BLE001 - the user's model failed under the tracer
        text = str(exc).lower()
        if isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text:
            # fvcore runs on real CPU tensors: running out of RAM is not a shape mismatch
            raise CnnprofError(f"{label}: out of memory running fvcore on real CPU tensors at {describe(specs)}; "
                               f"use {parameter('backend', 'torch')} (meta device, no memory)") from None
        raise forward_error(label, specs, exc) from None
    finally:
        for m, training in modes:
            m.training = training


def _own_records(inclusive: dict[str, dict[str, int]], modules: dict[str, nn.Module]) -> tuple[OpStat, ...]:
    """Per module and op, fvcore's inclusive counts minus the children's: what the module itself runs."""
    records = []
    for name, ops in inclusive.items():
        children = [f"{name}.{c}" if name else c for c, _ in modules[name].named_children()] if name in modules else []
        for op, total in ops.items():
            own = total - sum(inclusive.get(c, {}).get(op, 0) for c in children)
            if own:
                layer_type = "linear" if op in _MATMULS else module_type(modules[name]) if name in modules else "other"
                records.append(OpStat(name, op, layer_type, "conv", int(own), 0, 1))
    return tuple(records)
