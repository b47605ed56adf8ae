"""cnnprof: parameters, FLOPs and measured runtime of CNNs, side by side.

The public API is importable without importing torch; torch is loaded on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["build_model", "count_params", "count_flops", "benchmark", "list_models", "register_formula",
           "unregister_formula", "formulas", "Cost", "__version__"]


def build_model(spec, device=None, **overrides):
    """Build a model from a zoo name, YAML path, `module:callable` or nn.Module; overrides are config keys."""
    from cnnprof.models.spec import build_model as _build

    return _build(spec, device=device, overrides=overrides)


def count_params(model):
    """Count parameters of an nn.Module (or a model spec); returns a frozen ParamCount."""
    from cnnprof.counting.params import count_params as _count
    from cnnprof.models.spec import resolve

    return _count(model if _is_module(model) else resolve(model))


def count_flops(model, input_shape=None, scope="conv", backend="torch", *, inputs=None, **overrides):
    """Count MACs of one forward pass; returns a frozen FlopCount (see cnnprof.counting.flops).

    `inputs`: a shape, a spec string ('1,128:int64'), a tensor (only its shape and dtype are used: counted
    on a meta stand-in, never run), a tuple of those (positional inputs) or a dict (keyword inputs)."""
    from cnnprof.counting.flops import count_flops as _count
    from cnnprof.models.spec import resolve

    return _count(resolve(model, overrides), input_shape=input_shape, scope=scope, backend=backend, inputs=inputs)


def benchmark(model, input_shape=None, device="cpu", **options):
    """Measure forward-pass latency; returns a frozen BenchResult (see cnnprof.timing.runtime).
    `inputs=` as in count_flops (shapes or specs; tensors of those shapes are made on the device)."""
    from cnnprof.timing.runtime import benchmark as _bench

    return _bench(model, input_shape=input_shape, device=device, **options)


def _is_module(model) -> bool:
    from torch import nn

    return isinstance(model, nn.Module)


def list_models():
    """Zoo model names, sorted."""
    from cnnprof.models.zoo import zoo_names

    return zoo_names()


def register_formula(op, fn=None, *, scope="all", replace=False):
    """Register `fn(**op_arguments, out=output) -> Cost` as the cost of `op`; without `fn`, a decorator.

    `op`: torch.ops.aten.X (or .X.default), an aten name 'X', or 'namespace::name' for other ops (e.g.
    'torchvision::nms', a torch.library op). `scope`: 'conv' or 'all'. See cnnprof.counting.registry."""
    from cnnprof.counting.formulas import register_formula as _register

    return _register(op, fn, scope=scope, replace=replace)


def unregister_formula(op):
    """Remove the formula of `op`; returns the removed (formula, scope), to restore it later."""
    from cnnprof.counting.formulas import unregister_formula as _unregister

    return _unregister(op)


def formulas():
    """Every registered op key ('relu', 'torchvision::nms') -> (formula, scope)."""
    from cnnprof.counting.formulas import formulas as _formulas

    return _formulas()


def __getattr__(name):
    if name == "Cost":  # what a formula returns: Cost(type, macs, ops); torch-free, loaded on first use
        from cnnprof.counting.registry import Cost

        return Cost
    raise AttributeError(f"module 'cnnprof' has no attribute {name!r}")
