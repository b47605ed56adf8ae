"""Model specs: a zoo name (or alias), a YAML config path, or `module:callable` / `file.py:callable`."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from cnnprof.models.config import ModelConfig, load_config
from cnnprof.models.zoo import resolve_zoo_name, unknown_model_message, zoo_path
from cnnprof.errors import CnnprofError, ModelSpecError, first_line
from cnnprof.inputs import DEFAULT_INPUT_SHAPE, declared_inputs, quiet_stdout

@dataclass(frozen=True)
class ModelSource:
    """A resolved model spec: knows its display name and default input, builds on any device."""

    label: str
    config: ModelConfig | None = None
    factory: Callable[[], nn.Module] | None = None
    module: nn.Module | None = None
    target: Callable[..., nn.Module] | None = None  # a module:callable's callable, before overrides are bound

    @property
    def default_input_shape(self) -> tuple[int, ...]:
        """Shape of the first input the model declares (see `model_inputs`), without building it."""
        from cnnprof.inputs import as_specs

        specs = as_specs(*model_inputs(self, self.module))
        return specs[0].shape if specs else DEFAULT_INPUT_SHAPE

    def build(self, device: str | torch.device | None = None) -> nn.Module:
        """A fresh model in eval mode on `device` ('meta' allocates nothing).

        A factory whose constructor cannot run on meta (e.g. weight init that copies tensor values) is
        built on the CPU instead, silently: counting then uses meta stand-ins for its weights."""
        if self.module is not None:
            return self.module if device is None else self.module.to(device)
        if self.factory is not None and str(device) == "meta":
            try:
                with torch.device("meta"), quiet_stdout():
                    return _call_factory(self.label, self.factory).eval()
            except ModelSpecError:
                device = "cpu"  # retried on the CPU; if that fails too, its error is the one reported
        with torch.device(device or "cpu"), quiet_stdout():
            if self.config is not None:
                from cnnprof.models.builder import build

                model = build(self.config)
            else:
                model = _call_factory(self.label, self.factory)
        return model.eval()

    def inputs(self, model: nn.Module | None, given: Any = None) -> tuple[tuple, dict]:
        """(args, kwargs) of forward: `given`, else the config's input, the model's declared one or 1x3x224x224."""
        return model_inputs(self, model, given)

    def rebuild(self, device: str) -> nn.Module | None:
        """A fresh model with real weights on `device`, or None for a given module (it cannot be rebuilt)."""
        if self.config is None and self.factory is None:
            return None
        from dataclasses import replace

        return replace(self, module=None).build(device)


def resolve(spec: Any, overrides: Mapping[str, Any] | None = None) -> ModelSource:
    """Resolve a model spec (string, ModelConfig or nn.Module) without building it."""
    overrides = dict(overrides or {})
    if isinstance(spec, ModelSource) and not overrides:
        return spec
    if isinstance(spec, nn.Module):
        if overrides:
            raise CnnprofError("overrides (--set) apply to configs and factories, not to a built nn.Module")
        return ModelSource(label=type(spec).__name__, module=spec)
    if isinstance(spec, ModelConfig):
        return ModelSource(label=spec.name, config=spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.exists():  # a FIFO or directory is named as such by load_config, never read
            raise ModelSpecError(f"{spec}: no such config file")
        config = load_config(path, overrides)
        return ModelSource(label=config.name, config=config)
    if ":" in spec:
        target = _import_target(spec)
        return ModelSource(label=spec, factory=partial(target, **overrides), target=target)
    if resolve_zoo_name(spec) is None:
        raise ModelSpecError(unknown_model_message(spec))
    config = load_config(zoo_path(spec), overrides)
    return ModelSource(label=config.name, config=config)


def model_inputs(source: ModelSource, model: nn.Module | None, inputs: Any = None) -> tuple[tuple, dict]:
    """(args, kwargs) of forward, leaves InputSpecs or tensors: `inputs` if given, else the config's input,
    the model's declared input, or 1x3x224x224."""
    from cnnprof.inputs import normalize

    given = normalize(inputs)
    if given is not None:
        return given
    if source.config is not None:
        return normalize(source.config.input_shape)
    declared = declared_inputs(model) if model is not None else None
    return declared if declared is not None else normalize(DEFAULT_INPUT_SHAPE)


def build_model(spec: Any, device: str | torch.device | None = None, overrides: Mapping[str, Any] | None = None):
    """Build a model from any spec, in eval mode, on `device` (default CPU; 'meta' allocates nothing)."""
    return resolve(spec, overrides).build(device)


def _import_target(spec: str) -> Callable[..., nn.Module]:
    """The callable a `module:callable` or `file.py:callable` spec names, imported."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ModelSpecError(f"'{spec}': expected package.module:callable or path/to/file.py:callable")
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.is_file():
                raise ModelSpecError(f"'{spec}': no such file {target}")
            name = f"cnnprof_user_{abs(hash(str(file.resolve())))}"
            mod_spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            with quiet_stdout():
                mod_spec.loader.exec_module(module)
        else:
            with quiet_stdout():
                module = importlib.import_module(target)
    except CnnprofError:
        raise
    except Exception as exc:  # noqa: BLE001 - any import failure of user code is reported in one line
        raise ModelSpecError(f"'{spec}': cannot import {target}: {type(exc).__name__}: {first_line(exc)}") from None
    if not hasattr(module, attr):
        raise ModelSpecError(f"'{spec}': module {target} has no attribute '{attr}'")
    target = getattr(module, attr)
    if not callable(target):
        raise ModelSpecError(f"'{spec}': {attr} is not callable")
    return target


def _call_factory(label: str, factory: Callable[[], nn.Module]) -> nn.Module:
    try:
        model = factory()
    except TypeError as exc:
        raise ModelSpecError(f"'{label}': calling it failed: {first_line(exc)} "
                             f"(it must take no required arguments; --set values are passed as keywords)") from None
    except Exception as exc:  # noqa: BLE001
        raise ModelSpecError(f"'{label}': calling it failed: {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"'{label}' returned {type(model).__name__}, not a torch.nn.Module")
    return model
