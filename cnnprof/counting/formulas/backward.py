"""Backward ops (what autograd runs in a training step): the same MACs-and-ops conventions as the forward.

Scope "conv": `convolution_backward` computes up to three gradients, chosen by its `output_mask`:
- grad input (mask[0]): a transposed convolution of grad_output with the weight, as many MACs as the forward
  convolution (every forward product is met once more); the first layer (its input needs no gradient) has none;
- grad weight (mask[1]): a convolution of the input with grad_output, again the forward's MACs (each weight
  element sums N x H' x W' products), for grouped and depthwise convolutions too: C_out x C_in/groups x k
  weights. A frozen layer has none;
- grad bias (mask[2]): a sum of grad_output, not counted (as forward biases are not).
A linear layer's backward is autograd's matrix products (mm, bmm), priced by the forward's matmul formulas.

Scope "all":
- batch norm's forward in a training step uses batch statistics: priced as layer norm, 2 MACs + 3 ops per
  element (TRAIN_FORMULAS, per-call overrides of the training trace; inference keeps the folded 1 MAC).
- batch / layer / group norm backward (training statistics): gamma's and beta's gradients are reductions
  over every element (1 MAC for sum(g * x_hat), 1 op for sum(g)); the input's gradient
  gamma * rstd * (g - mean(g) - x_hat * mean(g * x_hat)) costs 2 MACs + 1 op per element, plus both
  reductions when gamma's and beta's gradients are not computed (a frozen norm still needs them). Batch norm
  with running statistics (eval) folds to 1 MAC per element, as its forward.
- activation backward (threshold for ReLU, hardtanh for ReLU6, sigmoid, SiLU, GELU, h-swish, ...): 1 op
  per element (gradient times the local derivative), as the forward's 1 op; softmax backward 3 ops.
- pooling backward: max pooling scatters each gradient to its argmax (1 op per grad_output element);
  average pooling spreads each over its window (k_h x k_w ops per grad_output element); adaptive average
  pooling 1 op per input element, as the forward; embedding backward 1 add per grad_output element.
- interpolation backward: each grad_output element is spread to its 2^d inputs (2^d MACs), as the forward.
"""
from __future__ import annotations

from math import prod
from typing import Any, Callable, NamedTuple

from cnnprof.counting.formulas.common import numel, per_element
from cnnprof.counting.formulas.products import conv_cost
from cnnprof.counting.registry import Cost, builtin


class SplitCost(NamedTuple):
    """The cost of one backward op that computes several gradients: its input's and its parameters'."""

    grad_input: Cost
    grad_weight: Cost


def _mask(output_mask: Any) -> tuple[bool, bool, bool]:
    mask = tuple(bool(m) for m in (output_mask or (True, True, True)))
    return (mask + (False, False, False))[:3]


def conv_backward_split(grad_output: Any, input: Any, weight: Any, bias_sizes: Any = None, stride: Any = (1,),
                        padding: Any = (0,), dilation: Any = (1,), transposed: bool = False,
                        output_padding: Any = (0,), groups: int = 1, output_mask: Any = None, **_: Any) -> SplitCost:
    """Input gradient and weight gradient, each the forward convolution's MACs when asked for (the module docstring)."""
    forward = conv_cost(input, weight, None, stride, padding, dilation, transposed, output_padding, groups,
                        out=grad_output)
    mask = _mask(output_mask)
    return SplitCost(forward._replace(macs=forward.macs if mask[0] else 0),
                     forward._replace(macs=forward.macs if mask[1] else 0))


def _norm_split(n: int, mask: tuple[bool, bool, bool], train: bool = True) -> SplitCost:
    """A norm's backward over n elements (the module docstring)."""
    weight = Cost("norm", n if mask[1] else 0, n if mask[2] else 0)
    if not mask[0]:
        return SplitCost(Cost("norm", 0, 0), weight)
    if not train:
        return SplitCost(Cost("norm", n, 0), weight)
    sums_macs, sums_ops = (0 if mask[1] else n), (0 if mask[2] else n)
    return SplitCost(Cost("norm", 2 * n + sums_macs, n + sums_ops), weight)


def batch_norm_backward_split(grad_out: Any, input: Any, weight: Any = None, running_mean: Any = None,
                              running_var: Any = None, save_mean: Any = None, save_invstd: Any = None,
                              train: bool = True, eps: float = 1e-5, output_mask: Any = None, **_: Any) -> SplitCost:
    """Batch norm's input, gamma and beta gradients (training statistics, or folded running ones)."""
    return _norm_split(numel(input), _mask(output_mask), bool(train))


def layer_norm_backward_split(grad_out: Any, input: Any, *_: Any, output_mask: Any = None, **__: Any) -> SplitCost:
    """Layer and group norm's input, gamma and beta gradients."""
    return _norm_split(numel(input), _mask(output_mask))


# aten op -> the formula that splits its cost into input gradient and parameter gradient work.
SPLITS: dict[str, Callable[..., SplitCost]] = {
    "convolution_backward": conv_backward_split,
    "native_batch_norm_backward": batch_norm_backward_split,
    "native_layer_norm_backward": layer_norm_backward_split,
    "native_group_norm_backward": layer_norm_backward_split,
}


def _total(name: str, split: Callable[..., SplitCost]) -> Callable[..., Cost]:
    """The registry's one-Cost formula of a split op: both parts summed."""

    def formula(*args: Any, **kwargs: Any) -> Cost:
        a, b = split(*args, **kwargs)
        return Cost(a.type, a.macs + b.macs, a.ops + b.ops)

    formula.__name__ = formula.__qualname__ = name
    formula.__doc__ = split.__doc__
    return formula


conv_backward_cost = builtin("convolution_backward", scope="conv")(
    _total("conv_backward_cost", conv_backward_split))
batch_norm_backward_cost = builtin("native_batch_norm_backward")(
    _total("batch_norm_backward_cost", batch_norm_backward_split))
layer_norm_backward_cost = builtin("native_layer_norm_backward", "native_group_norm_backward")(
    _total("layer_norm_backward_cost", layer_norm_backward_split))

activation_backward_cost = builtin(
    "threshold_backward", "hardtanh_backward", "hardswish_backward", "hardsigmoid_backward", "sigmoid_backward",
    "tanh_backward", "silu_backward", "gelu_backward", "leaky_relu_backward", "elu_backward", "mish_backward",
    "softplus_backward",
)(per_element("activation_backward_cost", "activation", ops=1))

softmax_backward_cost = builtin("_softmax_backward_data", "_log_softmax_backward_data")(
    per_element("softmax_backward_cost", "activation", ops=3))


@builtin("max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward", "embedding_dense_backward")
def scatter_backward_cost(grad_output: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """Each gradient added to the one input it came from: 1 op per grad_output element."""
    return Cost("pooling", 0, numel(grad_output))


@builtin("avg_pool2d_backward", "avg_pool3d_backward")
def avg_pool_backward_cost(grad_output: Any, input: Any, kernel_size: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """Each gradient spread over its window: k_h x k_w ops per grad_output element, as the forward."""
    kernel = [kernel_size] if isinstance(kernel_size, int) else list(kernel_size)
    if len(kernel) == 1:
        kernel = kernel * (input.dim() - 2)
    return Cost("pooling", 0, numel(grad_output) * prod(kernel))


adaptive_pool_backward_cost = builtin(
    "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward", "adaptive_max_pool2d_backward",
)(per_element("adaptive_pool_backward_cost", "pooling", ops=1, of="output"))


@builtin("upsample_linear1d_backward", "upsample_bilinear2d_backward", "upsample_trilinear3d_backward")
def linear_interpolate_backward_cost(grad_output: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """Each grad_output element spread to its 2^d nearest inputs, as the forward's weighted sum."""
    return Cost("interpolation", 2 ** (grad_output.dim() - 2) * numel(grad_output), 0)


def training_batch_norm_cost(input: Any, *_: Any, out: Any, training: bool = False, **__: Any) -> Cost:
    """Batch statistics (`training`): as layer norm, 2 MACs + 3 ops per element (mean, variance, centring,
    normalising, affine); running statistics: folded, 1 MAC per element."""
    n = numel(input)
    return Cost("norm", 2 * n, 3 * n) if training else Cost("norm", n, 0)


# What a training step prices differently from the registry: per-call overrides (a user's own come first).
TRAIN_FORMULAS = {op: (training_batch_norm_cost, "all") for op in (
    "native_batch_norm", "_native_batch_norm_legit", "cudnn_batch_norm", "miopen_batch_norm", "batch_norm")}
