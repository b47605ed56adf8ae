"""Per-operator cost formulas: pure shape arithmetic on the arguments and output of one aten op.

Every formula has the same signature, `(args, kwargs, out) -> (layer type, MACs, other ops)`, and is
registered in a plain dict by aten op name (in-place variants such as `relu_` share their formula).
Both the decomposed ops seen under no_grad (`convolution`, `addmm`, `native_batch_norm`) and the
composite ones seen under inference_mode (`conv2d`, `linear`, `batch_norm`) are covered.

Counting rules (1 MAC = one multiply-accumulate; "ops" = other elementary operations):
- scope "conv" (papers' convention): convolution and matrix products only; bias additions are not
  counted (as fvcore, torch.utils.flop_counter and torchvision's GFLOPS column).
  * convolution: N x C_out x H' x W' x (C_in / groups) x k_h x k_w MACs (depthwise: groups = C_in).
  * linear / matmul: (output elements) x (reduced dimension) MACs, i.e. in x out per row.
- scope "all" adds:
  * batch norm (inference): folds to y = a*x + b, 1 MAC per element.
  * layer / group norm: 2 MACs (variance, affine) + 3 ops (mean, centring, normalising) per element.
  * activations (ReLU, ReLU6, h-swish, h-sigmoid, sigmoid, SiLU, GELU, ...): 1 op per element; the
    internal cost of exp/tanh is not modelled.
  * softmax: 3 ops per element (exp, sum, divide).
  * element-wise add / sub / mul / div (residuals, SE scaling, layer scale): 1 op per output element.
  * max / avg pooling: k_h x k_w ops per output element; adaptive and global pooling, mean and sum:
    1 op per input element.
- Data movement (view, permute, cat, channel shuffle, ...) is free. Any other op that runs is reported
  as uncounted, never dropped silently.
"""
from __future__ import annotations

from math import prod
from typing import Any, Callable, NamedTuple

from cnnprof.analysis.types import conv_type


class Cost(NamedTuple):
    type: str
    macs: int
    ops: int


Formula = Callable[[tuple, dict, Any], Cost]
FORMULAS: dict[str, Formula] = {}
SCOPE: dict[str, str] = {}  # op name -> "conv" | "all"

# Ops that only move or reinterpret data, or allocate: zero cost by definition.
FREE_OPS = frozenset("""
view _unsafe_view reshape _reshape_alias permute transpose t expand expand_as squeeze unsqueeze flatten
unflatten split split_with_sizes chunk unbind slice select narrow cat stack clone contiguous detach alias
lift_fresh empty empty_like empty_strided new_empty new_zeros zeros zeros_like ones ones_like full full_like
fill copy _to_copy to as_strided view_as channel_shuffle pixel_shuffle constant_pad_nd pad dropout
feature_dropout alpha_dropout native_dropout identity randn rand normal_ uniform_ zero _local_scalar_dense
""".split())


def register(*names: str, scope: str = "all"):
    """Decorator: register a formula for aten ops `names` in scope 'conv' or 'all'."""

    def wrap(fn: Formula) -> Formula:
        for name in names:
            if name in FORMULAS:
                raise ValueError(f"formula for '{name}' registered twice")
            FORMULAS[name] = fn
            SCOPE[name] = scope
        return fn

    return wrap


def lookup(op_name: str) -> tuple[Formula | None, str | None]:
    """(formula, scope) for an aten op name; in-place `op_` falls back to `op`."""
    for name in (op_name, op_name.rstrip("_")):
        if name in FORMULAS:
            return FORMULAS[name], SCOPE[name]
    return None, None


def is_free(op_name: str) -> bool:
    return op_name in FREE_OPS or op_name.rstrip("_") in FREE_OPS


def _numel(t: Any) -> int:
    return t.numel() if hasattr(t, "numel") else 1


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


# ----------------------------------------------------------------------------- conv scope


@register("convolution", "_convolution", "conv1d", "conv2d", "conv3d", "cudnn_convolution",
          "mkldnn_convolution", "_convolution_mode", scope="conv")
def conv_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 and isinstance(args[6], bool) else False
    if len(args) > 8:
        groups = args[8]
    elif len(args) > 6 and not isinstance(args[6], bool):
        groups = args[6]  # conv2d(input, weight, bias, stride, padding, dilation, groups)
    else:
        groups = kwargs.get("groups", 1)
    kernel = tuple(w.shape[2:])
    per_output = w.shape[1] * prod(kernel)
    # Transposed: every input element meets C_out/groups x k x k weights; otherwise every output element.
    macs = _numel(x) * per_output if transposed else _numel(_first(out)) * per_output
    return Cost(conv_type(x.shape[1], int(groups), kernel), int(macs), 0)


@register("mm", "bmm", "matmul", scope="conv")
def matmul_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("linear", _numel(out) * args[0].shape[-1], 0)


@register("addmm", "baddbmm", "addbmm", scope="conv")
def addmm_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("linear", _numel(out) * args[1].shape[-1], 0)


@register("linear", scope="conv")
def linear_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("linear", _numel(out) * args[1].shape[-1], 0)


# ----------------------------------------------------------------------------- all scope


@register("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
          "batch_norm", "cudnn_batch_norm", "miopen_batch_norm", "_batch_norm_impl_index", "instance_norm")
def batch_norm_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("norm", _numel(args[0]), 0)


@register("native_layer_norm", "layer_norm", "native_group_norm", "group_norm")
def layer_norm_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    n = _numel(args[0])
    return Cost("norm", 2 * n, 3 * n)


@register("relu", "relu6", "hardtanh", "threshold", "leaky_relu", "elu", "selu", "celu", "prelu", "gelu",
          "silu", "mish", "sigmoid", "tanh", "hardswish", "hardsigmoid", "softplus", "clamp", "clamp_min",
          "clamp_max")
def activation_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("activation", 0, _numel(_first(out)))


@register("_softmax", "softmax", "_log_softmax", "log_softmax")
def softmax_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("activation", 0, 3 * _numel(out))


@register("add", "sub", "rsub", "mul", "div", "addcmul", "addcdiv", "neg", "reciprocal", "sqrt", "rsqrt",
          "exp", "pow", "maximum", "minimum", "where")
def elementwise_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("element-wise", 0, _numel(out))


@register("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
          "avg_pool1d", "avg_pool2d", "avg_pool3d")
def pool_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    kernel = args[1] if len(args) > 1 else kwargs["kernel_size"]
    kernel = [kernel] if isinstance(kernel, int) else list(kernel)
    if len(kernel) == 1:
        kernel = kernel * (args[0].dim() - 2)
    return Cost("pooling", 0, _numel(_first(out)) * prod(kernel))


@register("adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool3d",
          "_adaptive_avg_pool3d", "adaptive_max_pool2d", "adaptive_max_pool1d", "mean", "sum", "amax")
def reduce_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("pooling", 0, _numel(args[0]))
