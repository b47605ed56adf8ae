"""Memory of an inference pass or a training step, simulated on the meta device before anything is allocated.

The model runs on meta tensors under `LiveBytes`, a dispatch mode that does the allocator's bookkeeping: every
op output that is not a view or an in-place result allocates its storage (counted once per storage, at
its full size), and a weakref finalizer frees it when the tensor dies, as Python's reference counting frees
it in a real run. The peak of those live bytes over the op sequence, on top of what is resident before the
pass starts (parameters, buffers, inputs and, for training, the optimizer state), is the predicted peak.
A training step is `train_step`: forward, loss, backward, optimizer step, gradients set to None; the same
function is what cnnprof.timing runs and measures, so prediction and measurement run the same ops.
What autograd saves for backward is taken from `torch.autograd.graph.saved_tensors_hooks`: each storage
once, attributed to the module that saved it first. On the CPU, oneDNN convolution's copies of its input and
weight count while it runs (cpu_workspace). Not modelled: allocator rounding and caching, cuDNN workspaces,
other kernels' scratch memory. With `amp`, the forward pass and loss run under an emulation of torch.autocast
(cnnprof.counting.amp): parameters, gradients and optimizer state stay float32, what the listed ops compute
and save is bfloat16 (CPU) or float16 (CUDA), and the cast weights are live through the forward pass.
"""
from __future__ import annotations

import copy
import os
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from cnnprof.counting.amp import Autocast
from cnnprof.counting.liveness import FAST, LiveBytes, cpu_workspace, storage_bytes, storage_key as _key
from cnnprof.counting.meta_fast import cheap_checks
from cnnprof.errors import CnnprofError, parameter

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "float64": torch.float64}
MODES = ("infer", "train")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
__all__ = ["FAST", "Footprint", "LiveBytes", "cpu_workspace", "MODES", "OPTIMIZERS", "available_bytes", "check_settings",
           "estimate_bytes", "fits", "footprint",
           "make_optimizer", "prime_optimizer", "storage_bytes", "train_step", "training_loss"]


class SavedTensors:
    """`saved_tensors_hooks` that record each storage autograd saves once: bytes and tensors per module, the
    storages in `exclude` (parameters, buffers, inputs) left out."""

    def __init__(self, exclude: set[int], where: Any = None) -> None:
        self.exclude = exclude
        self.where = where  # an object with `.current` (the running module's path), or None
        self.bytes: dict[str, int] = defaultdict(int)
        self.tensors: dict[str, int] = defaultdict(int)
        self._seen: set[int] = set()

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _key(t)
        if key not in self.exclude and key not in self._seen:
            self._seen.add(key)
            module = self.where.current if self.where is not None else ""
            self.bytes[module] += t.untyped_storage().nbytes()
            self.tensors[module] += 1
        return t  # saved as is: the hooks only look

    def hooks(self) -> Any:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


def training_loss(out: Any) -> torch.Tensor:
    """The loss a training step backpropagates: cross-entropy against class 0 for (N, classes) logits, the mean
    of the output otherwise (the first floating tensor of the output)."""
    first = next((t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()), None)
    if first is None:
        raise CnnprofError("the model's output has no floating-point tensor to train on")
    if first.dim() == 2:
        target = torch.zeros(first.shape[0], dtype=torch.long, device=first.device)
        return nn.functional.cross_entropy(first, target)
    return first.mean()


def make_optimizer(name: str, params: Iterable[nn.Parameter], foreach: bool = False) -> torch.optim.Optimizer:
    """sgd (no state), momentum (SGD, one buffer per parameter), adam / adamw (two moments and a step each);
    `foreach`: the multi-tensor implementation (the default on CUDA), which allocates more at once."""
    params = [p for p in params if p.requires_grad]
    if name in ("sgd", "momentum"):
        return torch.optim.SGD(params, lr=0.01, momentum=0.9 if name == "momentum" else 0.0, foreach=foreach)
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=1e-3, foreach=foreach)
    raise CnnprofError(f"{parameter('optimizer', name)}: expected one of {', '.join(OPTIMIZERS)}")


def prime_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's state as its first step does (zero gradients, one step), gradients then dropped."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def forward_backward(model: nn.Module, args: tuple, kwargs: dict, amp: Any = None) -> None:
    """Forward, loss and backward: the gradients are left in `.grad`. `amp`: a context manager the forward pass
    and the loss run in (torch.autocast, or its emulation cnnprof.counting.amp.Autocast); backward runs outside
    it, as the AMP recipe has it."""
    with amp if amp is not None else nullcontext():
        loss = training_loss(model(*args, **kwargs))
    if loss.is_meta:
        _meta_backward(loss)
    else:
        loss.backward()


def _meta_backward(loss: torch.Tensor) -> None:
    """loss.backward() on meta, seeded with a ones tensor made here: backward's own seeding checks shapes with
    torch.fx's symbolic shapes, whose import (sympy) costs ~1 s, longer than the rest of a prediction. The same
    autograd engine runs either way; should its entry point move in another torch version, backward() it is."""
    seed = torch.ones(loss.shape, dtype=loss.dtype, device=loss.device)
    engine = getattr(getattr(torch.autograd, "Variable", None), "_execution_engine", None)
    if engine is None:
        loss.backward(seed)
        return
    engine.run_backward((loss,), (seed,), False, False, (), allow_unreachable=True, accumulate_grad=True)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict,
               amp: Any = None) -> None:
    """One training step: forward, loss, backward, optimizer step, gradients set to None (freed); `amp`: the
    autocast context of the forward pass and loss (see forward_backward)."""
    forward_backward(model, args, kwargs, amp)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def optimizer_state(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor of the optimizer's state."""
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


@dataclass(frozen=True)
class Footprint:
    """Bytes of one inference pass or training step: what is resident before it, what autograd saves, and the
    predicted peak (resident + the most that is live at once during the pass)."""

    mode: str
    parameters: int
    buffers: int
    inputs: int
    gradients: int  # train: one gradient per trainable parameter, live from backward to the optimizer step
    optimizer_state: int  # train: the optimizer's state, resident once its first step has run
    saved: int  # train: activations autograd saves for backward (parameters, buffers and inputs left out)
    peak: int
    saved_by_module: tuple[tuple[str, int, int], ...] = ()  # (module path, bytes, tensors), in forward order

    @property
    def resident(self) -> int:
        """Bytes live before the pass starts."""
        return self.parameters + self.buffers + self.inputs + self.optimizer_state

    @property
    def transient(self) -> int:
        """The most bytes live at once during the pass, above the resident ones."""
        return self.peak - self.resident


@contextmanager
def _mode_of(model: nn.Module, train: bool) -> Iterator[None]:
    """The model in train or eval mode for the pass, its own mode of every submodule restored after."""
    before = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield
    finally:
        for m, was in before:
            m.training = was


def _inputs(inputs: Any, dtype: str, device: str = "meta") -> tuple[tuple, dict]:
    """Meta tensors for one shape or a sequence of InputSpecs; float inputs in `dtype`."""
    from cnnprof.inputs import InputSpec, make_inputs, split

    specs = [InputSpec(tuple(inputs))] if inputs and isinstance(next(iter(inputs)), int) else list(inputs)
    specs = [InputSpec(s.shape, dtype if s.is_float else s.dtype, s.name) for s in specs]
    return make_inputs(*split(specs))


def check_settings(dtype: str, mode: str, optimizer: str, amp: bool = False) -> None:
    """Refuse a dtype, mode or optimizer that does not exist, and AMP on weights that are not float32."""
    if mode not in MODES:
        raise CnnprofError(f"{parameter('mode', mode)}: expected infer or train")
    if dtype not in ITEMSIZE:
        raise CnnprofError(f"{parameter('dtype', dtype)}: expected one of {', '.join(ITEMSIZE)}")
    if optimizer not in OPTIMIZERS:
        raise CnnprofError(f"{parameter('optimizer', optimizer)}: expected one of {', '.join(OPTIMIZERS)}")
    if amp and dtype != "float32":
        raise CnnprofError(f"{parameter('amp')} keeps the weights in float32 and casts op by op; it cannot "
                           f"go with {parameter('dtype', dtype)}")


def footprint(model: nn.Module, inputs: Any, dtype: str = "float32", mode: str = "infer", optimizer: str = "sgd",
              device: str = "cpu", where: Any = None, amp: bool = False) -> Footprint:
    """The Footprint of `model` (built on meta) on `inputs` (one shape or InputSpecs) in `dtype`: an inference
    pass (no_grad) or, with mode='train', a training step with `optimizer` (see train_step), as it runs on
    `device` (cpu: oneDNN's convolution workspace, cpu_workspace; cuda: the multi-tensor optimizer step, its
    default there). `where`: an object whose `.current` names the running module, to attribute saved tensors
    (cnnprof.counting.trace). `amp`: mixed precision, the forward pass and loss under torch.autocast for
    `device` (bfloat16 on cpu, float16 on cuda; emulated, cnnprof.counting.amp), weights kept in float32."""
    check_settings(dtype, mode, optimizer, amp)
    if dtype != "float32" and any(p.dtype != TORCH_DTYPES[dtype] for p in model.parameters()):
        model = copy.deepcopy(model).to(dtype=TORCH_DTYPES[dtype])
    args, kwargs = _inputs(inputs, dtype)
    train = mode == "train"
    params, buffers, given = list(model.parameters()), list(model.buffers()), [*args, *kwargs.values()]
    state, step_extra = _step_cost(params, optimizer, device == "cuda") if train else (0, 0)
    saved = SavedTensors({_key(t) for t in (*params, *buffers, *given)}, where)
    live = LiveBytes(cpu_workspace if device == "cpu" else None)
    # inference: as under torch.inference_mode (what cnnprof.timing measures), where autocast caches no cast weight
    autocast = Autocast(device, cache=train) if amp else nullcontext()
    with _mode_of(model, train), cheap_checks(), live, (saved.hooks() if train else nullcontext()), \
            torch.inference_mode(False):
        if train:
            forward_backward(model, args, kwargs, autocast)
            live.sweep()  # what is live when the optimizer steps: the gradients (and the loss)
            live.peak = max(live.peak, live.live + step_extra)
            for p in params:
                p.grad = None
        else:
            with torch.no_grad(), autocast:
                model(*args, **kwargs)
    sizes = dict(parameters=storage_bytes(params), buffers=storage_bytes(buffers), inputs=storage_bytes(given),
                 optimizer_state=state)
    by_module = tuple((m, saved.bytes[m], saved.tensors[m]) for m in saved.bytes)
    return Footprint(mode=mode, gradients=storage_bytes(p for p in params if p.requires_grad) if train else 0,
                     saved=saved.total, peak=sum(sizes.values()) + live.peak, saved_by_module=by_module, **sizes)


# Per optimizer: (state elements per parameter element, state bytes per parameter tensor (Adam's float32 step
# count), temporaries per element of the single-tensor step, of the multi-tensor (foreach) step). Data, not
# a simulation: constructing a torch.optim optimizer imports torch._dynamo (~2 s), longer than the whole
# prediction; tests/test_memory_predict.py checks this table against torch.optim (simulated_per_element).
OPTIMIZER_BYTES = {"sgd": (0, 0, 0, 0), "momentum": (1, 0, 0, 0), "adam": (2, 4, 2, 1), "adamw": (2, 4, 2, 1)}


def per_element(optimizer: str, foreach: bool, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(a, b, c, d): a parameter of n elements has a·n + b bytes of optimizer state, and its step allocates at
    most c·n + d bytes (OPTIMIZER_BYTES at the parameter's element size)."""
    state, scalar, single, multi = OPTIMIZER_BYTES[optimizer]
    size = torch.empty((), dtype=dtype).element_size()
    return state * size, scalar, (multi if foreach else single) * size, 0


def simulated_per_element(optimizer: str, foreach: bool, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """per_element found by stepping real one- and two-element CPU parameters with torch.optim (the check of
    OPTIMIZER_BYTES): the state each keeps, and the most its step allocates."""
    found = []
    for n in (1, 2):
        p = torch.zeros(n, dtype=dtype, requires_grad=True)
        opt = make_optimizer(optimizer, [p], foreach)
        prime_optimizer(opt)
        p.grad = torch.zeros_like(p)
        live = LiveBytes()
        with live, torch.inference_mode(False):
            opt.step()
        found.append((storage_bytes(optimizer_state(opt)), live.peak))
    (s1, e1), (s2, e2) = found
    return s2 - s1, 2 * s1 - s2, e2 - e1, 2 * e1 - e2


def _step_cost(params: list[nn.Parameter], optimizer: str, foreach: bool) -> tuple[int, int]:
    """(bytes of the optimizer state, most bytes its step allocates above the gradients), the same at every
    batch size. The single-tensor step frees each parameter's temporaries before the next one: its peak is
    the largest parameter's; the multi-tensor (foreach) step allocates them for all parameters at once."""
    state, steps = 0, []
    for p in params:
        if p.requires_grad:
            a, b, c, d = per_element(optimizer, foreach, p.dtype)
            state += a * p.numel() + b
            steps.append(c * p.numel() + d)
    return state, (sum(steps) if foreach else max(steps, default=0))


def estimate_bytes(model: nn.Module, inputs: Any, dtype: str = "float32", mode: str = "infer",
                   optimizer: str = "sgd", device: str = "cpu", amp: bool = False) -> int:
    """Predicted peak bytes of an inference pass (or, mode='train', a training step) of `model` (built on meta)
    in `dtype` on `device` (with `amp`: under autocast); `inputs`: one shape or a sequence of InputSpecs."""
    return footprint(model, inputs, dtype, mode, optimizer, device, amp=amp).peak


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
