"""Scope "all": per-element costs of norms, activations, softmax, element-wise arithmetic and statistics.

- batch norm (inference): folds to y = a*x + b, 1 MAC per element.
- layer / group norm: 2 MACs (variance, affine) + 3 ops (mean, centring, normalising) per element.
- activations (ReLU, ReLU6, h-swish, h-sigmoid, sigmoid, SiLU, GELU, ...): 1 op per element; the
  internal cost of exp/tanh is not modelled.
- softmax (also `_safe_softmax`, attention's masked softmax): 3 ops per element (exp, sum, divide).
- element-wise add / sub / mul / div (residuals, SE scaling, layer scale), comparisons, masked_fill,
  where, abs, exp, log, ...: 1 op per output element.
- cumulative sum / product: 1 op per element; index_put with accumulate: 1 op per value (else free).
- fold (col2im, overlapping patches summed back into an image): 1 op per input element.
- variance / std (var, var_mean, std): 1 MAC (square-accumulate) + 2 ops (mean, centring) per input
  element, as the statistics part of layer norm.
- vector norm (linalg_vector_norm, norm): 2-norm 1 MAC per input element (square-accumulate), any
  other order 2 ops per input element (|x|^p, accumulate); plus 1 op per output element (the root).
"""
from __future__ import annotations

from typing import Any

from cnnprof.counting.formulas.common import numel, per_element
from cnnprof.counting.registry import Cost, builtin

batch_norm_cost = builtin(
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training", "batch_norm",
    "cudnn_batch_norm", "miopen_batch_norm", "_batch_norm_impl_index", "instance_norm",
)(per_element("batch_norm_cost", "norm", macs=1, of="input"))

layer_norm_cost = builtin("native_layer_norm", "layer_norm", "native_group_norm", "group_norm")(
    per_element("layer_norm_cost", "norm", macs=2, ops=3, of="input"))

activation_cost = builtin(
    "relu", "relu6", "hardtanh", "threshold", "leaky_relu", "elu", "selu", "celu", "prelu", "gelu", "silu", "mish",
    "sigmoid", "tanh", "hardswish", "hardsigmoid", "softplus", "clamp", "clamp_min", "clamp_max",
)(per_element("activation_cost", "activation", ops=1))

softmax_cost = builtin("_softmax", "softmax", "_log_softmax", "log_softmax", "_safe_softmax")(
    per_element("softmax_cost", "activation", ops=3))

elementwise_cost = builtin(
    "add", "sub", "rsub", "mul", "div", "addcmul", "addcdiv", "neg", "reciprocal", "sqrt", "rsqrt", "exp", "pow",
    "maximum", "minimum", "where", "masked_fill", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or",
    "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not", "bitwise_xor", "abs", "sign", "sgn",
    "log", "log1p", "log2", "exp2", "expm1", "sin", "cos", "erf", "erfinv", "floor", "ceil", "round", "trunc",
    "frac", "remainder", "fmod", "floor_divide", "atan2", "square", "lerp", "isnan", "isinf", "nan_to_num", "logit",
)(per_element("elementwise_cost", "element-wise", ops=1))

cumulative_cost = builtin("cumsum", "cumprod", "logcumsumexp")(per_element("cumulative_cost", "element-wise", ops=1))

# F.fold adds every patch value into its output position: 1 op per input (column) element.
fold_cost = builtin("col2im")(per_element("fold_cost", "element-wise", ops=1, of="input"))

variance_cost = builtin("var", "var_mean", "std", "std_mean")(
    per_element("variance_cost", "norm", macs=1, ops=2, of="input"))


@builtin("index_put", "_unsafe_index_put")
def index_put_cost(input: Any, indices: Any, values: Any, accumulate: bool = False, *, out: Any,
                   **_: Any) -> Cost:
    """x[idx] = v is a copy (free); with accumulate=True (x[idx] += v) 1 add per value element."""
    return Cost("element-wise", 0, numel(values) if accumulate else 0)


@builtin("linalg_vector_norm", "norm")
def vector_norm_cost(input: Any, ord: Any = 2, *_: Any, out: Any, p: Any = None, **__: Any) -> Cost:
    """2-norm: 1 MAC per input element; other orders 2 ops; plus the root per output element.
    `ord` (linalg_vector_norm) and `p` (norm) name the order; None means 2."""
    n = numel(input)
    order = p if p is not None else ord
    macs, ops = (n, 0) if order is None or order == 2 else (0, 2 * n)
    return Cost("norm", macs, ops + numel(out))
