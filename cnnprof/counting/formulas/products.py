"""Scope "conv" (papers' convention): convolutions, matrix products and attention's matrix products.

Bias additions are not counted (as fvcore, torch.utils.flop_counter and torchvision's GFLOPS column).
- convolution: N x C_out x H' x W' x (C_in / groups) x k_h x k_w MACs (depthwise: groups = C_in);
  transposed: every input element meets C_out/groups x k_h x k_w weights.
- linear / matmul: (output elements) x (reduced dimension) MACs, i.e. in x out per row.
- attention (fused scaled_dot_product_attention kernels, nn.MultiheadAttention's fast path): its two
  matrix products, Q K^T and A V: batch x heads x L x S x (E + E_v) MACs, as torch.utils.flop_counter
  (causal masks not discounted). The multi-head fast path adds its input and output projections.
  The math decomposition (what runs on the meta device under no_grad) is counted op by op instead:
  bmm in this scope, the scaling and softmax in "all"; a fused kernel's softmax is not priced (one op
  carries one scope). Under inference_mode the composite `scaled_dot_product_attention` is seen whole.
"""
from __future__ import annotations

from math import prod
from typing import Any

from cnnprof.counting.formulas.common import first, numel
from cnnprof.counting.registry import Cost, Formula, builtin
from cnnprof.counting.types import conv_type


@builtin("convolution", "_convolution", "conv1d", "conv2d", "conv3d", "cudnn_convolution", "mkldnn_convolution",
         "_convolution_mode", "convolution_overrideable", "_slow_conv2d_forward", scope="conv")
def conv_cost(input: Any, weight: Any, bias: Any = None, stride: Any = (1,), padding: Any = (0,),
              dilation: Any = (1,), transposed: bool = False, output_padding: Any = (0,), groups: int = 1, *,
              out: Any, **_: Any) -> Cost:
    """Every output element (transposed: every input element) meets C_in/groups x k weights."""
    kernel = tuple(weight.shape[2:])
    per_output = weight.shape[1] * prod(kernel)
    macs = numel(input) * per_output if transposed else numel(first(out)) * per_output
    return Cost(conv_type(input.shape[1], int(groups), kernel), int(macs), 0)


@builtin("conv_transpose1d", "conv_transpose2d", "conv_transpose3d", scope="conv")
def conv_transpose_cost(input: Any, weight: Any, bias: Any = None, stride: Any = (1,), padding: Any = (0,),
                        output_padding: Any = (0,), groups: int = 1, *, out: Any, **_: Any) -> Cost:
    """The composite seen under inference_mode: every input element meets C_out/groups x k weights."""
    kernel = tuple(weight.shape[2:])
    return Cost(conv_type(input.shape[1], int(groups), kernel), numel(input) * weight.shape[1] * prod(kernel), 0)


@builtin("mm", "bmm", "matmul", scope="conv")
def matmul_cost(input: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """(..., n, k) @ (..., k, m): k MACs per output element."""
    return Cost("linear", numel(out) * input.shape[-1], 0)


@builtin("addmm", "baddbmm", "addbmm", scope="conv")
def addmm_cost(input: Any, mat1: Any = None, *_: Any, out: Any, batch1: Any = None, **__: Any) -> Cost:
    """bias + mat1 @ mat2 (batch1 @ batch2): the product only."""
    left = mat1 if mat1 is not None else batch1
    return Cost("linear", numel(out) * left.shape[-1], 0)


@builtin("linear", scope="conv")
def linear_cost(input: Any, weight: Any, bias: Any = None, *, out: Any, **_: Any) -> Cost:
    """in_features MACs per output element; the bias is not counted."""
    return Cost("linear", numel(out) * weight.shape[-1], 0)


@builtin("_scaled_mm", scope="conv")
def scaled_mm_cost(input: Any, mat2: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """fp8 matmul with scales: (m, k) @ (k, n), the scales are not counted."""
    return Cost("linear", numel(out) * input.shape[-1], 0)


def attention(name: str, seq_dim: int) -> Formula:
    """A fused-attention formula for (query, key, value) whose key sequence runs along `seq_dim`:
    Q K^T and A V over every (batch, head); q's heads count (grouped-query K/V are broadcast)."""

    def formula(query: Any, key: Any, value: Any, *_: Any, out: Any, **__: Any) -> Cost:
        macs = numel(query) // query.shape[-1] * key.shape[seq_dim] * (query.shape[-1] + value.shape[-1])
        return Cost("attention", macs, 0)

    formula.__name__ = formula.__qualname__ = name
    return formula


# (batch, heads, L, E) tensors: the two matmuls only (see the module docstring).
sdpa_cost = builtin("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                    "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math_for_mps",
                    "scaled_dot_product_attention", scope="conv")(attention("sdpa_cost", -2))
# The kernels under the fused ops, on (batch, L, heads, E) tensors.
flash_attention_cost = builtin("_flash_attention_forward", "_efficient_attention_forward",
                               scope="conv")(attention("flash_attention_cost", -3))


@builtin("_native_multi_head_attention", scope="conv")
def multi_head_attention_cost(query: Any, key: Any, value: Any, embed_dim: int, *_: Any, out: Any,
                              **__: Any) -> Cost:
    """nn.MultiheadAttention's inference fast path: Q, K, V and output projections plus attention."""
    projections = (numel(query) + numel(key) + numel(value) + numel(first(out))) * embed_dim
    return Cost("attention", projections + numel(query) * key.shape[-2] * 2, 0)
