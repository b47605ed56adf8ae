"""One model's three numbers side by side: parameters, FLOPs (and acts), and optional latency.

`profile(model, inputs=..., mode="infer"|"train")` counts a model spec or an nn.Module once on the meta device (never moving or
changing a given module), adds a predicted latency when given a device profile, and returns a `Profile`
that prints as the CLI's table (`print(cnnprof.profile(model))`) and serialises as its JSON row (`to_dict()`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from cnnprof.counting.conventions import CONVENTIONS
from cnnprof.errors import CnnprofError, parameter
from cnnprof.inputs import InputSpec, input_specs
from cnnprof.results import Printable


@dataclass(frozen=True)
class Profile(Printable):
    """Parameters, FLOPs and acts of one model (and its predicted latency, if asked for)."""

    params: Any  # cnnprof.counting.params.ParamCount
    flops: Any  # cnnprof.counting.flops.FlopCount (its scope is the profile's)
    convention: str = "macc"
    prediction: Any = None  # cnnprof.predict.latency.LatencyPrediction, or None
    source: Any = field(default=None, repr=False, compare=False)  # the resolved model (cnnprof.models.spec)

    @property
    def model(self) -> str:
        return self.flops.model

    def report(self):
        """The table `cnnprof compare` shows, with this model alone."""
        from cnnprof.profiling.compare import Comparison

        return Comparison((self,), self.convention, self.flops.scope).report()

    def to_dict(self) -> dict[str, Any]:
        """`cnnprof compare`'s JSON row of this model, without the ratios (there is no reference)."""
        return {k: v for k, v in self.report()[1][0].items() if not k.endswith("_ratio")}


def count_model(source: Any, scope: str = "conv", backend: str = "torch", batch_size: int | None = None,
                resolution: int | None = None, inputs: Any = None, **count_options: Any):
    """(FlopCount, ParamCount) of a resolved source (cnnprof.models.spec.resolve): built once, on meta for the
    torch backend (on the CPU if its constructor cannot run on meta), on the CPU for fvcore, which traces real
    tensors. `inputs`: explicit InputSpecs (or one shape); else the declared input with batch/resolution."""
    from cnnprof.counting.flops import count_flops
    from cnnprof.counting.params import count_params

    model = source.module if source.module is not None else source.build("cpu" if backend == "fvcore" else "meta")
    if isinstance(inputs, tuple) and inputs and isinstance(inputs[0], int):
        inputs = (InputSpec(inputs),)  # a plain shape
    specs = input_specs(source, model, batch_size, resolution, inputs)
    fc = count_flops(replace(source, module=model), scope=scope, backend=backend,
                     inputs=list(specs) if specs is not None else None, **count_options)
    return fc, count_params(model, source.label)


def profile(model: Any, inputs: Any = None, *, input_shape: Any = None, batch_size: int | None = None,
            resolution: int | None = None, scope: str = "conv", convention: str = "macc",
            overrides: Mapping[str, Any] | None = None, device_profile: Any = None, dtype: str = "float32",
            formulas: Mapping | None = None, mode: str = "infer", frozen: Sequence[str] | None = None) -> Profile:
    """Profile one model (zoo name, YAML path, `module:callable` or nn.Module): params, FLOPs, acts and, with a
    `device_profile` (cnnprof.predict.device), predicted latency in `dtype`, all from one op trace. Inputs as in
    count_flops; `formulas` (per-call formula overrides) as in count_flops. `mode="train"`: the FLOPs of one
    training step (forward and backward, see cnnprof.counting.train), `frozen` patterns of parameters that get
    no gradient (besides those with requires_grad=False)."""
    from cnnprof.counting.flops import flop_count
    from cnnprof.counting.params import count_params
    from cnnprof.counting.run import trace_model
    from cnnprof.models.spec import resolve

    _check(scope, convention, input_shape, inputs, mode, frozen, device_profile)
    inputs = (tuple(input_shape),) if input_shape is not None else inputs
    source = resolve(model, overrides)
    built = source.module if source.module is not None else source.build("meta")  # a given module is never moved
    specs = input_specs(source, built, batch_size, resolution, _specs(inputs))
    if mode == "train":
        return Profile(count_params(built, source.label), _train_count(source, built, specs, inputs, scope, formulas,
                                                                       frozen), convention, None, source)
    trace = trace_model(replace(source, module=built), list(specs) if specs is not None else inputs,
                        formulas=formulas, traffic=device_profile is not None)
    prediction = None
    if device_profile is not None:
        from cnnprof.counting.traffic import memory_profile
        from cnnprof.predict.latency import measure_layers, predict_ops

        measure_layers(device_profile, replace(source, module=built), list(specs) if specs is not None else inputs,
                       dtype)  # the layers a measured table misses, when it is filled on demand
        prediction = predict_ops(memory_profile(trace, dtype), device_profile, dtype)
    return Profile(count_params(built, source.label), flop_count(trace, scope), convention, prediction, source)


def _train_count(source: Any, built: Any, specs: Any, inputs: Any, scope: str, formulas: Mapping | None,
                 frozen: Sequence[str] | None) -> Any:
    """The FlopCount of one training step of the built model."""
    from cnnprof.counting.flops import train_flop_count
    from cnnprof.counting.train import train_trace

    trace = train_trace(replace(source, module=built), list(specs) if specs is not None else inputs,
                        frozen=frozen or (), formulas=formulas)
    return train_flop_count(trace, scope)


def _check(scope: str, convention: str, input_shape: Any, inputs: Any, mode: str = "infer",
           frozen: Sequence[str] | None = None, device_profile: Any = None) -> None:
    from cnnprof.counting.flops import check_mode, check_options

    if convention not in CONVENTIONS:
        raise CnnprofError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    check_options(scope, "torch", input_shape, inputs)
    check_mode(mode, "torch", frozen)
    if mode == "train" and device_profile is not None:
        raise CnnprofError(f"a latency prediction is of a forward pass; it does not apply with "
                           f"{parameter('mode', 'train')}")


def _specs(inputs: Any) -> Any:
    """Explicit inputs as InputSpecs where they are flat shapes/specs; anything else as given."""
    from cnnprof.inputs import as_specs, is_flat, normalize

    found = normalize(inputs)
    if found is None:
        return None
    return as_specs(*found) if is_flat(*found) else inputs
