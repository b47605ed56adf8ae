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
  * attention (fused scaled_dot_product_attention kernels, nn.MultiheadAttention's fast path): its two
    matrix products, Q K^T and A V: batch x heads x L x S x (E + E_v) MACs, as torch.utils.flop_counter
    (causal masks not discounted). The multi-head fast path adds its input and output projections.
    The math decomposition (what runs on the meta device under no_grad) is counted op by op instead:
    bmm in this scope, the scaling and softmax in "all"; a fused kernel's softmax is not priced (one op
    carries one scope). Under inference_mode the composite `scaled_dot_product_attention` is seen whole.
- scope "all" adds:
  * batch norm (inference): folds to y = a*x + b, 1 MAC per element.
  * layer / group norm: 2 MACs (variance, affine) + 3 ops (mean, centring, normalising) per element.
  * activations (ReLU, ReLU6, h-swish, h-sigmoid, sigmoid, SiLU, GELU, ...): 1 op per element; the
    internal cost of exp/tanh is not modelled.
  * softmax (also `_safe_softmax`, attention's masked softmax): 3 ops per element (exp, sum, divide).
  * element-wise add / sub / mul / div (residuals, SE scaling, layer scale), comparisons, masked_fill,
    where, abs, exp, log, ...: 1 op per output element.
  * cumulative sum / product: 1 op per element; index_put with accumulate: 1 op per value (else free).
  * fold (col2im, overlapping patches summed back into an image): 1 op per input element.
  * max / avg pooling: k_h x k_w ops per output element; adaptive and global pooling, mean, sum, max,
    min, argmax, all/any: 1 op per input element.
  * variance / std (var, var_mean, std): 1 MAC (square-accumulate) + 2 ops (mean, centring) per input
    element, as the statistics part of layer norm.
  * vector norm (linalg_vector_norm, norm): 2-norm 1 MAC per input element (square-accumulate), any
    other order 2 ops per input element (|x|^p, accumulate); plus 1 op per output element (the root).
  * interpolation: weighted sum of the 2^d nearest inputs, 2^d MACs per output element (linear 2,
    bilinear 4, trilinear 8); bicubic 4 x 4 = 16 MACs. Nearest-neighbour upsampling is a copy (free).
- detection post-processing (data-dependent; counted as they ran, e.g. on a real CPU pass):
  * nonzero: 1 op (a comparison) per input element.
  * sort: n x ceil(log2 n) comparisons per sorted row of n; unique: a sort plus 1 op per element;
    topk: n x max(1, ceil(log2 k)) per row (a k-heap).
  * nms (torchvision): sort the N scores, 3 ops per box area, then 13 ops per box pair for IoU and
    threshold (4 min/max, 2 x (subtract, clamp), product, union add and subtract, divide, compare),
    all N(N-1)/2 pairs: an upper bound, the kernel skips boxes already suppressed.
  * roi_align (torchvision): s x s bilinear samples per output element (4 MACs each) and 1 op for the
    average (s = sampling_ratio; an adaptive ratio depends on box sizes and is counted as 1).
- Data movement (view, permute, cat, roll, index, gather, padding, channel shuffle, nearest upsampling, ...) and
  allocation (zeros, arange, scalar_tensor, ...) are free. Any other op that runs is reported as
  uncounted, never dropped silently.
"""
from __future__ import annotations

from math import ceil, log2, prod
from typing import Any, Callable, NamedTuple

from cnnprof.counting.types import conv_type


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
roll flip repeat tile index _unsafe_index index_select gather take masked_select
select_scatter slice_scatter diagonal tril triu movedim swapaxes unfold im2col diag_embed repeat_interleave
upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d
_upsample_nearest_exact3d scalar_tensor arange linspace new_full new_ones lift_fresh_copy bernoulli
resize_ set_ _assert_async _assert_tensor_metadata sym_constrain_range_for_size type_as unsafe_split
unsafe_split_with_sizes unsafe_chunk reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d
replication_pad2d replication_pad3d
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


def op_name(op: Any) -> str:
    """The aten name of an op given as an OpOverload / OpOverloadPacket (torch.ops.aten.relu_.default) or a string."""
    if isinstance(op, str):
        return op
    packet = getattr(op, "overloadpacket", op)
    return getattr(packet, "__name__", str(op))


def lookup(op: Any) -> tuple[Formula | None, str | None]:
    """(formula, scope) for an op (OpOverload or aten name); in-place `op_` falls back to `op`."""
    name = op_name(op)
    for key in (name, name.rstrip("_")):
        if key in FORMULAS:
            return FORMULAS[key], SCOPE[key]
    return None, None


def is_free(op: Any) -> bool:
    """Whether an op (OpOverload or aten name) only moves, reinterprets or allocates data."""
    name = op_name(op)
    return name in FREE_OPS or name.rstrip("_") in FREE_OPS


def _numel(t: Any) -> int:
    return t.numel() if hasattr(t, "numel") else 1


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


# ----------------------------------------------------------------------------- conv scope


@register("convolution", "_convolution", "conv1d", "conv2d", "conv3d", "cudnn_convolution",
          "mkldnn_convolution", "_convolution_mode", "convolution_overrideable", "_slow_conv2d_forward", scope="conv")
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


@register("conv_transpose1d", "conv_transpose2d", "conv_transpose3d", scope="conv")
def conv_transpose_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """The composite seen under inference_mode: (input, weight, bias, stride, padding, output_padding, groups)."""
    x, w = args[0], args[1]
    groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
    kernel = tuple(w.shape[2:])
    return Cost(conv_type(x.shape[1], int(groups), kernel), _numel(x) * w.shape[1] * prod(kernel), 0)


@register("mm", "bmm", "matmul", scope="conv")
def matmul_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("linear", _numel(out) * args[0].shape[-1], 0)


@register("addmm", "baddbmm", "addbmm", scope="conv")
def addmm_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("linear", _numel(out) * args[1].shape[-1], 0)


@register("linear", scope="conv")
def linear_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("linear", _numel(out) * args[1].shape[-1], 0)


@register("_scaled_mm", scope="conv")
def scaled_mm_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """fp8 matmul with scales: (m, k) @ (k, n), the scales are not counted."""
    return Cost("linear", _numel(out) * args[0].shape[-1], 0)


def _attention_macs(q: Any, k: Any, v: Any, seq_dim: int) -> int:
    """Q K^T and A V over every (batch, head): q's heads count (grouped-query K/V are broadcast)."""
    return _numel(q) // q.shape[-1] * k.shape[seq_dim] * (q.shape[-1] + v.shape[-1])


@register("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
          "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
          "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math_for_mps",
          "scaled_dot_product_attention", scope="conv")
def sdpa_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """Fused attention on (batch, heads, L, E) tensors: the two matmuls only (see the module docstring)."""
    return Cost("attention", _attention_macs(args[0], args[1], args[2], -2), 0)


@register("_flash_attention_forward", "_efficient_attention_forward", scope="conv")
def flash_attention_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """The kernels under the fused ops, on (batch, L, heads, E) tensors."""
    return Cost("attention", _attention_macs(args[0], args[1], args[2], -3), 0)


@register("_native_multi_head_attention", scope="conv")
def multi_head_attention_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """nn.MultiheadAttention's inference fast path: Q, K, V and output projections plus attention."""
    q, k, v, embed = args[0], args[1], args[2], args[3]
    projections = (_numel(q) + _numel(k) + _numel(v) + _numel(_first(out))) * embed
    return Cost("attention", projections + _numel(q) * k.shape[-2] * 2, 0)


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


@register("_softmax", "softmax", "_log_softmax", "log_softmax", "_safe_softmax")
def softmax_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("activation", 0, 3 * _numel(out))


@register("add", "sub", "rsub", "mul", "div", "addcmul", "addcdiv", "neg", "reciprocal", "sqrt", "rsqrt",
          "exp", "pow", "maximum", "minimum", "where", "masked_fill", "eq", "ne", "lt", "le", "gt", "ge",
          "logical_and", "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not",
          "bitwise_xor", "abs", "sign", "sgn", "log", "log1p", "log2", "exp2", "expm1", "sin", "cos", "erf",
          "erfinv", "floor", "ceil", "round", "trunc", "frac", "remainder", "fmod", "floor_divide", "atan2",
          "square", "lerp", "isnan", "isinf", "nan_to_num", "logit")
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


@register("max", "min", "amin", "argmax", "argmin", "prod", "all", "any", "logsumexp")
def reduce_or_binary_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """max(x) / max(x, dim) reduce (1 op per input element); max(x, y) is element-wise (1 per output)."""
    if len(args) > 1 and hasattr(args[1], "numel"):
        return Cost("element-wise", 0, _numel(_first(out)))
    return Cost("pooling", 0, _numel(args[0]))


@register("cumsum", "cumprod", "logcumsumexp")
def cumulative_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("element-wise", 0, _numel(out))


@register("index_put", "_unsafe_index_put")
def index_put_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """x[idx] = v is a copy (free); with accumulate=True (x[idx] += v) 1 add per value element."""
    accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
    return Cost("element-wise", 0, _numel(args[2]) if accumulate else 0)


@register("col2im")
def fold_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """F.fold adds every patch value into its output position: 1 op per input (column) element."""
    return Cost("element-wise", 0, _numel(args[0]))


@register("var", "var_mean", "std", "std_mean")
def variance_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    n = _numel(args[0])
    return Cost("norm", n, 2 * n)


@register("linalg_vector_norm", "norm")
def vector_norm_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    n = _numel(args[0])
    p = args[1] if len(args) > 1 else kwargs.get("ord", kwargs.get("p", 2))
    p = 2 if p is None else p
    macs, ops = (n, 0) if p == 2 else (0, 2 * n)
    return Cost("norm", macs, ops + _numel(out))


@register("upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d")
def linear_interpolate_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """Each output element is a weighted sum of its 2^d nearest inputs (d spatial dimensions)."""
    return Cost("interpolation", 2 ** (out.dim() - 2) * _numel(out), 0)


@register("upsample_bicubic2d")
def bicubic_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("interpolation", 16 * _numel(out), 0)


# ----------------------------------------------------------------------------- detection post-processing


def _sort_ops(n: int) -> int:
    return n * ceil(log2(n)) if n > 1 else 0


@register("nonzero")
def nonzero_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    return Cost("selection", 0, _numel(args[0]))


def _row(x: Any, dim: int) -> tuple[int, int]:
    """(rows, length) of `x` along `dim`."""
    n = x.shape[dim] if x.dim() else 1
    return (_numel(x) // n if n else 0), n


@register("sort")
def sort_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """sort(x, dim=-1, descending=False): a comparison sort of every row."""
    rows, n = _row(args[0], args[1] if len(args) > 1 else kwargs.get("dim", -1))
    return Cost("selection", 0, rows * _sort_ops(n))


@register("topk")
def topk_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """topk(x, k, dim=-1): every element of a row passes a k-element heap."""
    k = args[1]
    rows, n = _row(args[0], args[2] if len(args) > 2 else kwargs.get("dim", -1))
    return Cost("selection", 0, rows * n * max(1, ceil(log2(k)) if k > 1 else 1))


@register("_unique2", "_unique", "unique_dim")
def unique_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    """torch.unique: sort all elements, then one scan."""
    n = _numel(args[0])
    return Cost("selection", 0, _sort_ops(n) + n)


@register("nms")
def nms_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    n = args[0].shape[0]
    return Cost("selection", 0, _sort_ops(n) + 3 * n + 13 * n * (n - 1) // 2)


@register("roi_align")
def roi_align_cost(args: tuple, kwargs: dict, out: Any) -> Cost:
    ratio = args[5] if len(args) > 5 else kwargs.get("sampling_ratio", -1)
    samples = ratio * ratio if ratio > 0 else 1
    n = _numel(out)
    return Cost("pooling", 4 * samples * n, n)
