"""Model inputs as data: shapes, dtypes and names, parsed from the CLI or the API without importing torch.

An input is written `1,3,224,224` (float32), `1,128:int64` (a dtype after a colon) or, for a keyword
argument of forward, `mask=1,224,224:bool`. A model's inputs are positional inputs then named ones.
Tensors are made from specs only by `make_inputs()`, which imports torch when called.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import contextlib
import sys
from typing import Mapping

from cnnprof.errors import CnnprofError, ModelSpecError, first_line, parameter

DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
INT_DTYPES = ("int64", "int32", "int16", "int8", "uint8")
DTYPES = FLOAT_DTYPES + INT_DTYPES + ("bool",)
_ALIASES = {"float": "float32", "half": "float16", "double": "float64", "long": "int64", "int": "int32"}
DEFAULT_SHAPE = (1, 3, 224, 224)
MAX_RESOLUTION = 1 << 15  # as a config's resolution (models/schema.py MAX_SPATIAL; inputs cannot import models)
MAX_INPUT_ELEMENTS = 1 << 40  # ~4 TB of float32: beyond any real input, below int64 overflow inside


@dataclass(frozen=True)
class InputSpec:
    """One input tensor of forward: its shape, dtype name, and keyword name (None: positional)."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    name: str | None = None

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def __str__(self) -> str:
        text = "×".join(str(d) for d in self.shape) or "scalar"
        text += "" if self.dtype == "float32" else f":{self.dtype}"
        return f"{self.name}={text}" if self.name else text


def check_shape(shape: Any, what: str = "input shape") -> tuple[int, ...]:
    """A shape as a tuple of positive ints, or a one-line CnnprofError."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise CnnprofError(f"{what} must be a sequence of positive integers like 1,3,224,224, got {shape!r}") from None
    if any(not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in dims):
        raise CnnprofError(f"{what} must be positive integers like 1,3,224,224, got {shape!r}"[:300])
    # Bounded so that no activation can overflow a tensor's size (channel counts are bounded by the config).
    if math.prod(dims) > MAX_INPUT_ELEMENTS:
        raise CnnprofError(f"{what} {'x'.join(map(str, dims))}"[:120] + f" has more than 2^40 "
                           f"({MAX_INPUT_ELEMENTS:,}) elements; reduce the batch size or resolution")
    return dims


def check_dtype(dtype: str, what: str = "input") -> str:
    """A dtype name from DTYPES (aliases such as long, half accepted)."""
    name = _ALIASES.get(dtype.strip().lower(), dtype.strip().lower())
    if name not in DTYPES:
        raise CnnprofError(f"{what}: unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return name


def parse_input(text: str, named: bool = False) -> InputSpec:
    """Parse `1,3,224,224`, `1,128:int64` or (named) `mask=1,224,224:bool`."""
    option = "--input" if named else "--input-shape"
    raw, name = text.strip(), None
    if named:
        name, sep, raw = raw.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise CnnprofError(f"{option} {text!r}: expected NAME=SHAPE[:DTYPE] like mask=1,224,224:bool")
    shape_text, _, dtype = raw.partition(":")
    try:
        dims = tuple(int(d) for d in re.split(r"[,x×]", shape_text.strip()))
    except ValueError:
        raise CnnprofError(f"{option} {text!r}: expected integers like 1,3,224,224 (dtype after a colon: "
                           f"1,128:int64)") from None
    if any(d <= 0 for d in dims):
        raise CnnprofError(f"{option} {text!r}: every dimension must be a positive integer")
    return InputSpec(dims, check_dtype(dtype, f"{option} {text!r}") if dtype else "float32", name)


def parse_inputs(shapes: Iterable[str] | None, named: Iterable[str] | None) -> tuple[InputSpec, ...] | None:
    """CLI inputs: every --input-shape (positional, in order) then every --input NAME=SHAPE; None if none."""
    specs = [parse_input(t) for t in shapes or []] + [parse_input(t, named=True) for t in named or []]
    names = [s.name for s in specs if s.name]
    if len(names) != len(set(names)):
        raise CnnprofError(f"--input: a name is given twice: {', '.join(sorted(names))}")
    return tuple(specs) or None


def describe(specs: Sequence[InputSpec]) -> str:
    """'1×3×224×224' or '1×128:int64, mask=1×128:bool'."""
    return ", ".join(str(s) for s in specs)


def spatial_dims(shape: Sequence[int]) -> list[int]:
    """Indices of spatial dims: L of N,C,L (audio), H,W of N,C,H,W, H,W of N,C,T,H,W (video time is kept)."""
    rank = len(shape)
    return {3: [2], 4: [2, 3], 5: [3, 4]}.get(rank, [])


def with_batch_and_resolution(specs: Sequence[InputSpec], batch_size: int | None,
                              resolution: int | None) -> tuple[InputSpec, ...]:
    """Set the batch dim of every input; --resolution sets the first input's height (or length) and scales
    its other spatial dims by the same factor (aspect ratio kept). The result is bounded as any input is:
    a resolution of at most MAX_RESOLUTION, at most MAX_INPUT_ELEMENTS elements per input."""
    check_resolution(resolution)
    out = [replace(s, shape=(batch_size, *s.shape[1:])) if batch_size and s.shape else s for s in specs]
    if resolution is not None:
        if not out:
            raise CnnprofError(f"{parameter('resolution')}: the model declares no input to scale; give "
                               f"{parameter('input_shape')}")
        first = out[0]
        dims = spatial_dims(first.shape)
        if not dims or not first.is_float:
            raise CnnprofError(f"{parameter('resolution')}: input {first} has no spatial dimensions (expected N,C,L, "
                               f"N,C,H,W or N,C,T,H,W); give the shape with {parameter('input_shape')}")
        shape = list(first.shape)
        ref = shape[dims[0]]
        for i in dims:
            shape[i] = max(1, round(shape[i] * resolution / ref))
        out[0] = replace(first, shape=tuple(shape))
    for spec in out:
        if spec.shape:
            check_shape(spec.shape, f"input {spec.name}" if spec.name else "input")
    return tuple(out)


def _is_tensor(value: Any) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and bool(value) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in value)


def _leaf(value: Any) -> Any:
    """Shapes and strings become InputSpecs; tensors, specs and other values stay; containers are mapped."""
    if isinstance(value, InputSpec) or _is_tensor(value):
        return value
    if _is_shape(value):
        return InputSpec(check_shape(value))
    if isinstance(value, str):
        return parse_input(value)
    if isinstance(value, dict):
        return {k: _leaf(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_leaf(v) for v in value)
    return value


def normalize(inputs: Any) -> tuple[tuple, dict] | None:
    """API inputs -> (args, kwargs) of forward, leaves being InputSpecs, tensors or plain values.

    Accepts a shape (1,3,224,224), a spec string ('1,128:int64'), an InputSpec, a tensor, a tuple/list of
    those (positional inputs; named InputSpecs go to kwargs) or a dict (keyword inputs)."""
    if inputs is None:
        return None
    if isinstance(inputs, dict):
        return (), {str(k): _leaf(v) for k, v in inputs.items()}
    if isinstance(inputs, (str, InputSpec)) or _is_shape(inputs) or _is_tensor(inputs):
        inputs = (inputs,)
    if not isinstance(inputs, (tuple, list)):
        raise CnnprofError(f"inputs must be a shape, tensor, tuple or dict, got {type(inputs).__name__}")
    args, kwargs = [], {}
    for value in inputs:
        value = _leaf(value)
        if isinstance(value, InputSpec) and value.name:
            kwargs[value.name] = value
        else:
            args.append(value)
    return tuple(args), kwargs


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _leaves(v)]
    if isinstance(tree, (tuple, list)):
        return [x for v in tree for x in _leaves(v)]
    return [tree]


def as_specs(args: tuple, kwargs: dict) -> tuple[InputSpec, ...]:
    """Every tensor input as an InputSpec (shape, dtype, keyword name), positional first."""
    specs = []
    for name, tree in [(None, a) for a in args] + list(kwargs.items()):
        for leaf in _leaves(tree):
            if isinstance(leaf, InputSpec):
                specs.append(replace(leaf, name=name))
            elif _is_tensor(leaf):
                specs.append(InputSpec(tuple(leaf.shape), str(leaf.dtype).removeprefix("torch."), name))
    return tuple(specs)


def is_flat(args: tuple, kwargs: dict) -> bool:
    """True when every input is a single tensor (spec or tensor), so batch/resolution can be applied."""
    return all(isinstance(v, InputSpec) or _is_tensor(v) for v in (*args, *kwargs.values()))


def split(specs: Sequence[InputSpec]) -> tuple[tuple, dict]:
    """(args, kwargs) of a flat spec list: unnamed specs positional, named ones by keyword."""
    return tuple(s for s in specs if not s.name), {s.name: s for s in specs if s.name}


def make_inputs(args: tuple, kwargs: dict, real: bool = False, seed: int = 0) -> tuple[tuple, dict]:
    """Tensors for every leaf: meta stand-ins (`real=False`: given tensors are not copied, only described),
    or CPU tensors (given tensors as they are, specs filled as `tensors()` does)."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def make(leaf: Any) -> Any:
        if isinstance(leaf, InputSpec):
            dtype = getattr(torch, leaf.dtype)
            if not real:
                return torch.empty(leaf.shape, dtype=dtype, device="meta")
            if leaf.is_float:
                return torch.rand(leaf.shape, generator=gen).to(dtype)
            return torch.zeros(leaf.shape, dtype=dtype)
        if isinstance(leaf, torch.Tensor):
            return leaf if real or leaf.is_meta else torch.empty_like(leaf, device="meta")
        if isinstance(leaf, dict):
            return {k: make(v) for k, v in leaf.items()}
        if isinstance(leaf, (tuple, list)):
            return type(leaf)(make(v) for v in leaf)
        return leaf

    return tuple(make(a) for a in args), {k: make(v) for k, v in kwargs.items()}


def quiet_stdout():
    """User code may print while building or declaring inputs: keep stdout for cnnprof's data."""
    return contextlib.redirect_stdout(sys.stderr)


def declared_inputs(model: Any) -> tuple[tuple, dict] | None:
    """The input a model declares: `example_inputs()`, `default_input_shape`, or timm's
    `pretrained_cfg["input_size"]` (C,H,W, batch 1 added); None if it declares none."""
    example = getattr(model, "example_inputs", None)
    if callable(example):
        try:
            with quiet_stdout():
                return normalize(example())
        except CnnprofError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's method failed
            raise ModelSpecError(f"{type(model).__name__}.example_inputs() failed: {type(exc).__name__}: "
                                 f"{first_line(exc)}") from None
    shape = getattr(model, "default_input_shape", None)
    if shape is not None and not callable(shape):
        return normalize(shape)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, Mapping) else None
    if isinstance(size, (tuple, list)) and size and all(isinstance(d, int) for d in size):
        return normalize((1, *size))
    return None


def check_resolution(resolution: int | None) -> None:
    """A resolution within the documented cap (the same as a config's)."""
    if resolution is not None and not 1 <= resolution <= MAX_RESOLUTION:
        raise CnnprofError(f"{parameter('resolution', resolution)}: must be between 1 and {MAX_RESOLUTION:,}")


def check_explicit(explicit: Any, resolution: int | None) -> None:
    """Explicit inputs are used as given: a resolution with them would be ignored, so it is an error (one rule
    for every command and function that takes both)."""
    check_resolution(resolution)
    if explicit and resolution is not None:
        raise CnnprofError(f"{parameter('resolution')} has no effect with {parameter('input_shape')} / "
                           f"{parameter('inputs')} (their shapes are used as given)")


def input_specs(source: Any, model: Any, batch_size: int | None, resolution: int | None, explicit: Any):
    """The inputs a command uses (InputSpecs): explicit ones as given (a `resolution` with them is an error), else
    the model's declared input (config, example_inputs(), default_input_shape, timm pretrained_cfg) or
    1x3x224x224, with batch/resolution applied. None: a declared input nested in containers, used as declared.
    `source`: see cnnprof.counting.source."""
    check_explicit(explicit, resolution)
    if explicit:
        return tuple(explicit)
    args, kwargs = source.inputs(model)
    if not is_flat(args, kwargs):
        if resolution is not None:
            raise CnnprofError(f"{source.label}: {parameter('resolution')}: the declared input is nested; give "
                               f"{parameter('input_shape')}")
        return None
    return with_batch_and_resolution(as_specs(args, kwargs), batch_size, resolution)
