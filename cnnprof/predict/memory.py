"""Memory, predicted: what an inference pass or a training step of a model needs, before anything is allocated.

The terms (cnnprof.counting.footprint simulates the pass on meta tensors): parameters and buffers; gradients
(train: one per trainable parameter); the optimizer state (train: none for sgd, one buffer per parameter for
momentum, two moments and a step for adam / adamw); the inputs; the activations autograd saves for backward
(train; each storage once); and the predicted peak, the most bytes live at once over the op sequence, on top
of what is resident. Against a budget (bytes; by default the device's free memory) it says whether the peak
fits and finds the largest batch that does: the peak is close to linear in the batch, so two simulations
give a guess and a few more confirm it. With `amp`, the pass runs under an emulation of torch.autocast
(cnnprof.counting.amp): the parameters, gradients and optimizer state stay in float32.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from cnnprof.counting.footprint import Footprint, available_bytes, check_settings, footprint
from cnnprof.errors import CnnprofError, parameter
from cnnprof.inputs import MAX_INPUT_ELEMENTS, InputSpec, with_batch_and_resolution
from cnnprof.results import Printable

__all__ = ["MemoryEstimate", "largest_batch", "memory", "parse_bytes", "predict_memory"]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: Any, name: str = "budget") -> int:
    """Bytes of `value`: an int, or a size such as '24GiB', '512 MiB', '8GB' (KiB/MiB/GiB/TiB are powers of 1024,
    kB/MB/GB/TB of 1000, a bare K/M/G/T of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        match = _SIZE.match(str(value))
        if match is None or match.group(2).lower() not in _UNITS:
            raise CnnprofError(f"{parameter(name, value)}: expected a size such as 24GiB, 512MiB or 8GB")
        n = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if n <= 0:
        raise CnnprofError(f"{parameter(name, value)}: expected a size above 0 bytes")
    return n


@dataclass(frozen=True)
class MemoryEstimate(Printable):
    """Predicted memory of one model at one batch size: the terms of `footprint`, the budget it is checked
    against and the largest batch that fits it. Printing shows the `cnnprof memory` tables."""

    model: str
    mode: str  # infer | train
    optimizer: str | None  # train only
    dtype: str
    device: str
    inputs: tuple[InputSpec, ...]
    footprint: Footprint
    budget: int | None = None  # bytes the peak is checked against (None: not checked)
    budget_source: str = "given"  # given | free memory of the device
    max_batch: int | None = None  # largest batch whose peak fits the budget (0: not even batch 1)
    amp: str | None = None  # mixed precision: the dtype autocast computes in (weights stay `dtype`); None: off

    @property
    def batch_size(self) -> int:
        return self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else 1

    @property
    def peak(self) -> int:
        return self.footprint.peak

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else self.peak <= self.budget


Peak = Callable[[int], int]


def largest_batch(peak_at: Peak, budget: int, known: dict[int, int], limit: int, lowest: int = 1) -> int:
    """The largest batch `lowest` <= b <= `limit` with peak_at(b) <= `budget` (0 if none), assuming the peak
    grows with the batch. `known`: peaks already simulated (batch -> bytes), filled as it goes. The first guess
    solves the line through `lowest` and the largest known batch; a bracket then closes on the answer."""
    def at(b: int) -> int:
        if b not in known:
            known[b] = peak_at(b)
        return known[b]

    if at(lowest) > budget:
        return 0
    far = max(known) if max(known) > lowest else lowest + 1
    slope = max((at(far) - at(lowest)) / (far - lowest), 1.0)
    guess = min(limit, max(lowest, lowest + int((budget - at(lowest)) // slope)))
    lo, hi = lowest, limit + 1  # peak_at(lo) fits; hi does not (limit + 1: beyond what may be asked)
    for b, p in known.items():
        if p <= budget:
            lo = max(lo, b)
        else:
            hi = min(hi, b)
    step = 1
    while hi - lo > 1:
        b = guess if lo < guess < hi else (lo + hi) // 2
        if at(b) <= budget:
            lo, guess = b, b + step  # the line was low: look just above, then further
        else:
            hi, guess = b, b - step
        step *= 2
    return lo


def predict_memory(source: Any, inputs: Sequence[InputSpec], *, mode: str = "infer", optimizer: str = "sgd",
                   dtype: str = "float32", device: str = "cpu", budget: Any = None, max_batch: bool = True,
                   label: str | None = None, amp: bool = False, budget_source: str = "given") -> MemoryEstimate:
    """The MemoryEstimate of a resolved model (cnnprof.models.spec.ModelSource, built here on meta) on `inputs`
    (InputSpecs; the first dimension is the batch). `budget`: bytes or a size ('24GiB'); None checks against
    the device's free memory (cnnprof.counting.footprint.available_bytes). `max_batch`: also find the largest
    batch that fits. `amp`: mixed precision, torch.autocast for `device` (emulated, cnnprof.counting.amp).
    `budget_source`: what a given budget is, as the report says it ("free memory" when a caller read the device's
    free memory once for several predictions, so that they share one budget)."""
    from cnnprof.counting.amp import AMP_DTYPES
    from cnnprof.counting.trace import ModuleTracker

    check_settings(dtype, mode, optimizer, amp)
    if budget is None:
        from cnnprof.timing.settings import check_device

        check_device(device)  # its free memory is the budget
    model = _meta_model(source)
    specs = tuple(inputs)
    tracker = ModuleTracker(model)
    try:
        fp = footprint(model, specs, dtype, mode, optimizer, device, where=tracker, amp=amp)
    finally:
        tracker.remove()
    limit_bytes, source_of = (parse_bytes(budget), budget_source) if budget is not None else (
        available_bytes(device), "free memory")
    result = MemoryEstimate(label or source.label, mode, optimizer if mode == "train" else None, dtype, device, specs,
                            fp, limit_bytes, source_of, amp=AMP_DTYPES[device] if amp else None)
    if limit_bytes is None or not max_batch or not specs or not specs[0].shape:
        return result

    def peak_at(b: int) -> int:
        return footprint(model, with_batch_and_resolution(specs, b, None), dtype, mode, optimizer, device,
                         amp=amp).peak

    known, lowest = {result.batch_size: fp.peak}, 1
    try:
        known[1] = peak_at(1)
    except ValueError:  # BatchNorm cannot train on one value per channel (a 1x1 map at batch 1)
        lowest = 2
    return replace(result, max_batch=largest_batch(peak_at, limit_bytes, known, _batch_limit(specs), lowest))


def _meta_model(source: Any) -> Any:
    """The model on meta: built there, or a user's module copied there (never moved: it is theirs)."""
    import copy

    module = source.module
    if module is None:
        return source.build("meta")
    if all(t.device.type == "meta" for t in (*module.parameters(), *module.buffers())):
        return module
    return copy.deepcopy(module).to("meta")


def _batch_limit(specs: Sequence[InputSpec]) -> int:
    """The largest batch an input may have (cnnprof.inputs caps an input at 2^40 elements)."""
    per_sample = max(1, max(_prod(s.shape[1:]) for s in specs if s.shape))
    return max(1, MAX_INPUT_ELEMENTS // per_sample)


def _prod(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def memory(model: Any, inputs: Any = None, *, batch_size: int | None = None, mode: str = "infer",
           optimizer: str = "sgd", dtype: str = "float32", device: str = "cpu", budget: Any = None,
           max_batch: bool = True, amp: bool = False) -> MemoryEstimate:
    """predict_memory for any model (nn.Module or resolved spec) on `inputs` as count_flops takes them (default:
    the model's declared input), at `batch_size` when given; `amp`: under torch.autocast (mixed precision)."""
    from cnnprof.inputs import as_specs
    from cnnprof.models.spec import model_inputs, resolve

    source = resolve(model)
    meta = _meta_model(source)
    specs = as_specs(*model_inputs(source, meta, inputs))
    if batch_size is not None:
        specs = with_batch_and_resolution(specs, batch_size, None)
    return predict_memory(source, specs, mode=mode, optimizer=optimizer, dtype=dtype, device=device, budget=budget,
                          max_batch=max_batch, amp=amp)
