"""cnnprof: parameters, FLOPs and measured runtime of CNNs, side by side.

The public API is importable without importing torch; torch is loaded on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ("profile", "compare", "count_params", "count_flops", "benchmark", "memory", "trace", "build_model", "list_models",
           "register_formula", "unregister_formula", "formulas", "Cost",
           # result types (each prints as the CLI's table and has to_dict(), the CLI's JSON row)
           "Profile", "Comparison", "ParamCount", "FlopCount", "BenchResult", "MemoryProfile", "MemoryEstimate",
           "LatencyPrediction",
           "Trace", "OpEvent", "BenchSettings", "__version__")

# Loaded on first use (torch-free import of cnnprof): public name -> defining module.
_LAZY = {
    "Cost": "cnnprof.counting.registry", "Profile": "cnnprof.profiling.profile",
    "Comparison": "cnnprof.profiling.compare", "BenchSettings": "cnnprof.profiling.compare",
    "ParamCount": "cnnprof.counting.params", "FlopCount": "cnnprof.counting.flops",
    "BenchResult": "cnnprof.timing.runtime", "MemoryProfile": "cnnprof.counting.traffic",
    "LatencyPrediction": "cnnprof.predict.latency", "Trace": "cnnprof.counting.trace",
    "OpEvent": "cnnprof.counting.trace", "MemoryEstimate": "cnnprof.predict.memory",
}


def profile(model, inputs=None, **options):
    """Params, FLOPs, acts (and, with device_profile=, predicted latency) of one model from one op trace;
    `print()` shows the CLI's table, `to_dict()` its JSON row. Options: see cnnprof.profiling.profile.profile."""
    from cnnprof.profiling.profile import profile as _profile

    return _profile(model, inputs, **options)


def compare(models, **options):
    """Models side by side with ratios to the first (bench=BenchSettings(...) to time them interleaved);
    returns a printable Comparison. Options: see cnnprof.profiling.compare.compare."""
    from cnnprof.profiling.compare import compare as _compare

    return _compare(models, **options)


def trace(model, inputs=None, *, formulas=None):
    """The op trace of one forward pass (every aten op as an OpEvent), the source of every count."""
    from cnnprof.counting.run import trace_model
    from cnnprof.models.spec import resolve

    return trace_model(model if _is_module(model) else resolve(model), inputs, formulas=formulas)


def build_model(spec, device=None, **overrides):
    """Build a model from a zoo name, YAML path, `module:callable` or nn.Module; overrides are config keys."""
    from cnnprof.models.spec import build_model as _build

    return _build(spec, device=device, overrides=overrides)


def count_params(model):
    """Count parameters of an nn.Module (or a model spec); returns a frozen ParamCount."""
    from cnnprof.counting.params import count_params as _count
    from cnnprof.models.spec import resolve

    return _count(model if _is_module(model) else resolve(model))


def count_flops(model, input_shape=None, scope="conv", backend="torch", *, inputs=None, formulas=None,
                mode="infer", frozen=None, **overrides):
    """Count MACs of one forward pass (`mode="train"`: of one training step, forward and backward, `frozen`
    patterns of parameters without gradient); returns a frozen FlopCount (see cnnprof.counting.flops).

    `inputs`: a shape, a spec string ('1,128:int64'), a tensor (only its shape and dtype are used: counted
    on a meta stand-in, never run), a tuple of those (positional inputs) or a dict (keyword inputs).
    `formulas`: per-call overrides {op or nn.Module class: formula or (formula, scope)}; `overrides`:
    config values of a model spec (width_mult=0.5)."""
    from cnnprof.counting.flops import count_flops as _count
    from cnnprof.models.spec import resolve

    return _count(resolve(model, overrides), input_shape=input_shape, scope=scope, backend=backend, inputs=inputs,
                  formulas=formulas, mode=mode, frozen=frozen)


def benchmark(model, input_shape=None, device="cpu", **options):
    """Measure forward-pass latency; returns a frozen BenchResult (see cnnprof.timing.runtime).
    `inputs=` as in count_flops (shapes or specs; tensors of those shapes are made on the device)."""
    from cnnprof.timing.runtime import benchmark as _bench

    return _bench(model, input_shape=input_shape, device=device, **options)


def memory(model, inputs=None, **options):
    """Predicted memory of an inference pass (mode='infer') or a training step (mode='train', optimizer='sgd' |
    'momentum' | 'adam' | 'adamw'): parameters, gradients, optimizer state, inputs, saved activations and the
    peak, simulated on meta; with budget= (bytes or '24GiB'; default the device's free memory) whether it fits
    and the largest batch that does. Returns a printable MemoryEstimate; options: batch_size, dtype, device,
    budget, max_batch, amp (mixed precision under torch.autocast; see cnnprof.predict.memory.memory)."""
    from cnnprof.predict.memory import memory as _memory

    return _memory(model, inputs, **options)


def _is_module(model) -> bool:
    from torch import nn

    return isinstance(model, nn.Module)


def list_models():
    """Zoo model names, sorted."""
    from cnnprof.models.zoo import zoo_names

    return zoo_names()


def register_formula(op, fn=None, *, scope=None, replace=False):
    """Register `fn(**op_arguments, out=output) -> Cost` as the cost of `op`; without `fn`, a decorator.

    `op`: torch.ops.aten.X (or .X.default), an aten name 'X', or 'namespace::name' for other ops (e.g.
    'torchvision::nms', a torch.library op); or an nn.Module class, counted as a unit by
    `fn(module, *args, out=output, **kwargs) -> Cost`. `scope`: 'conv' or 'all' (default: 'all' for an op,
    'conv' for a module). See cnnprof.counting.registry and cnnprof.counting.units."""
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
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnprof' has no attribute {name!r}")
