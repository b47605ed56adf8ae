"""Memory a forward pass needs, estimated on the meta device before anything is allocated.

Estimate = parameters and buffers + the input + the peak of live activations during the forward pass.
Live bytes are tracked op by op: every op output that is not a view or an in-place result adds its
bytes, and a weakref finalizer subtracts them when the tensor is freed (inference frees intermediates
as soon as the next layer has used them). Allocator slack and kernel workspaces are not modelled, so
the check refuses only configurations that cannot fit, and real OOMs are still caught as rows.
"""
from __future__ import annotations

import os
import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


class _LiveBytes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never under torch.compile; avoids importing torch._dynamo

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        aliases = any(r.alias_info is not None for r in func._schema.returns)
        if not aliases:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    n = t.numel() * t.element_size()
                    self.live += n
                    weakref.finalize(t, self._free, n)
            self.peak = max(self.peak, self.live)
        return out


def estimate_bytes(model: torch.nn.Module, inputs: Any, dtype: str = "float32") -> int:
    """Bytes a forward pass of `model` (built on meta, float32) needs in `dtype`; `inputs`: one shape or
    a sequence of InputSpecs (cnnprof.inputs)."""
    from cnnprof.inputs import InputSpec, make_inputs, split

    scale = ITEMSIZE[dtype] / 4
    weights = sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * b.element_size()
                                                                 for b in model.buffers())
    specs = [InputSpec(tuple(inputs))] if inputs and isinstance(next(iter(inputs)), int) else list(inputs)
    args, kwargs = make_inputs(*split(specs))
    given = sum(t.numel() * t.element_size() for t in (*args, *kwargs.values()))
    mode = _LiveBytes()
    with torch.no_grad(), mode:
        model(*args, **kwargs)
    return int(scale * (weights + given + mode.peak))


def available_bytes(device: str) -> int | None:
    """Free memory: MemAvailable on Linux CPUs (None if unknown); free device memory on CUDA."""
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return int(free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated())
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fits(needed: int, device: str) -> tuple[bool, int | None]:
    """(whether `needed` bytes fit now, the bytes available)."""
    free = available_bytes(device)
    return (free is None or needed <= free), free


def gib(n: Any) -> str:
    return f"{n / 2**30:.1f} GiB"
