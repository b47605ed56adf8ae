"""Quantized models (torch.ao.quantization: static, dynamic, fp16): their ops priced as the float ops they replace.

Quantized kernels have no meta implementation, so such a model is counted by one real CPU pass (see
cnnprof.counting.run). Their weights are not tensors but packed params (`Conv2dPackedParamsBase`,
`LinearPackedParamsBase`, `CellParamsBase`), unpacked here to read the weight's shape; MACs are counted
exactly as for the float op (int8 or fp16, one multiply-accumulate is one MAC), so a quantized model's
conv-scope count equals its float model's (batch norms are folded into the convolutions).

- scope "conv": `quantized::conv{1,2,3}d[_relu]`, `conv2d_add[_relu]`, `conv_transpose{1,2,3}d`: as
  convolution; `quantized::linear[_relu|_leaky_relu|_tanh]`, `linear_dynamic` and friends (fp16, unpacked
  weight, q/dq reference kernels): as linear; `quantized::matmul`: as matmul; `aten::quantized_lstm` /
  `quantized_gru` and the dynamic cells: as the fused recurrent kernels (cnnprof.counting.formulas.recurrent).
  A fused activation or addition (`_relu`, `_add`) is not priced (one op carries one scope, as a fused
  attention kernel's softmax).
- scope "all": `quantized::add` / `mul` (and their scalar forms) 1 op per output element, 2 with a fused
  ReLU (the float model's add and relu); batch norm 1 MAC, layer / group / instance norm 2 MACs + 3 ops per
  element; activations 1 op, softmax 3 ops per element; max pooling as pooling; `quantize_per_tensor`,
  `quantize_per_channel` and `dequantize` 1 op per element (scale, shift and round).
"""
from __future__ import annotations

from typing import Any

import torch

from cnnprof.counting.formulas.common import numel, per_element
from cnnprof.counting.formulas.pooling import pool_cost
from cnnprof.counting.formulas.products import conv_cost, matmul_cost
from cnnprof.counting.formulas.recurrent import _matrices, _steps_times_batch
from cnnprof.counting.registry import Cost, builtin


def unpacked(packed: Any) -> list[Any]:
    """The tensors held by packed params (weight first; None dropped); a tensor is itself."""
    if isinstance(packed, torch.Tensor):
        return [packed]
    if isinstance(packed, torch.ScriptObject) and packed._has_method("unpack"):
        got = packed.unpack()
        return [t for t in (got if isinstance(got, (tuple, list)) else (got,)) if isinstance(t, torch.Tensor)]
    if isinstance(packed, torch.ScriptObject) and packed._has_method("__getstate__"):
        return _cell_tensors(packed.__getstate__())
    return []


def _cell_tensors(state: Any) -> list[Any]:
    """The tensors of an RNN cell's params, whose state is ((kind, tensors, doubles, longs, packed linear
    params), type name). Dynamic int8 cells keep their biases as tensors and in the packed params too (each
    counted once: the packed params' weights only); fp16 cells only in the packed params."""
    inner = state[0] if isinstance(state, tuple) and state and isinstance(state[0], tuple) else ()
    if len(inner) != 5:
        return []
    tensors = [t for t in inner[1] if isinstance(t, torch.Tensor)]
    packed = [unpacked(p) for p in inner[4]]
    return tensors + [t for p in packed for t in (p[:1] if tensors else p)]


def _weight(packed: Any) -> Any:
    return unpacked(packed)[0]


def _packed_arg(named: dict[str, Any]) -> Any:
    """The packed weight among an op's arguments (named `packed_weight`, `weight`, `W_prepack`, `W`, `w`)."""
    for name in ("packed_weight", "weight", "W_prepack", "W_prepack_i", "W", "w"):
        if named.get(name) is not None:
            return named[name]
    raise ValueError(f"no packed weight among the arguments {sorted(named)}")


@builtin("quantized::conv1d", "quantized::conv2d", "quantized::conv3d", "quantized::conv1d_relu",
         "quantized::conv2d_relu", "quantized::conv3d_relu", "quantized::conv2d_add", "quantized::conv2d_add_relu",
         "quantized::conv_transpose1d", "quantized::conv_transpose2d", "quantized::conv_transpose3d",
         "_quantized::conv2d", "_quantized::conv2d_relu", "_quantized::conv3d", "_quantized::conv3d_relu",
         "_quantized::conv_transpose1d", "_quantized::conv_transpose2d", scope="conv")
def quantized_conv_cost(qx: Any, *_: Any, out: Any, **named: Any) -> Cost:
    """As convolution, the weight's shape, groups and transposition read from its packed params. A 1-d
    convolution is packed as a 2-d one with a kernel of height 1 (dropped, so its type says "conv 3")."""
    packed = _packed_arg(named)
    weight = _weight(packed)
    if weight.dim() == qx.dim() + 1:  # conv1d: (C_out, C_in/g, 1, k)
        weight = weight.squeeze(2)
    return conv_cost(qx, weight, transposed=bool(packed.transpose()), groups=int(packed.groups()), out=out)


@builtin("quantized::linear", "quantized::linear_relu", "quantized::linear_leaky_relu", "quantized::linear_tanh",
         "quantized::linear_dynamic", "quantized::linear_relu_dynamic", "quantized::linear_dynamic_fp16",
         "quantized::linear_relu_dynamic_fp16", "quantized::linear_dynamic_fp16_unpacked_weight",
         "quantized::linear_with_input_q_dq_qweight_dq_output_fp32",
         "quantized::linear_with_input_q_dq_qweight_dq_relu_output_fp32", "_quantized::linear",
         "_quantized::linear_dynamic", "onednn::linear_dynamic_fp16", "onednn::linear_relu_dynamic_fp16",
         scope="conv")
def quantized_linear_cost(*_: Any, out: Any, **named: Any) -> Cost:
    """in_features MACs per output element, as linear (the weight packed, or a plain tensor)."""
    return Cost("linear", numel(out) * _weight(_packed_arg(named)).shape[-1], 0)


@builtin("quantized::matmul", scope="conv")
def quantized_matmul_cost(qa: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """(..., n, k) @ (..., k, m) of two quantized tensors: k MACs per output element, as matmul."""
    return matmul_cost(qa, out=out)


@builtin("quantized_lstm", "quantized_gru", scope="conv")
def quantized_rnn_cost(*_: Any, params: Any, out: Any, **named: Any) -> Cost:
    """Every layer and direction (one CellParamsBase each; legacy overloads: plain tensors): its weight
    matrices meet every one of the T x B rows of the input (a packed sequence's `data`), as the fused float
    kernels (dynamic quantization keeps the input float)."""
    rows = _steps_times_batch(named["input"] if "input" in named else named["data"])
    return Cost("linear", rows * sum(_matrices(unpacked(cell)) for cell in params), 0)


@builtin("quantized::quantized_lstm_cell_dynamic", "quantized::quantized_gru_cell_dynamic",
         "quantized::quantized_rnn_relu_cell_dynamic", "quantized::quantized_rnn_tanh_cell_dynamic", scope="conv")
def quantized_rnn_cell_cost(input: Any, hx: Any, w_ih: Any, w_hh: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """One step: W_ih and W_hh meet every one of the B rows (the gates' element-wise ops are not priced)."""
    return Cost("linear", _steps_times_batch(input) * (numel(_weight(w_ih)) + numel(_weight(w_hh))), 0)


quantized_elementwise_cost = builtin(
    "quantized::add", "quantized::add_out", "quantized::add_scalar", "quantized::add_scalar_out", "quantized::mul",
    "quantized::mul_out", "quantized::mul_scalar", "quantized::mul_scalar_out", "_quantized::add", "onednn::qadd",
    "onednn::qmul", "quantize_per_tensor", "quantize_per_channel", "quantize_per_tensor_dynamic", "dequantize",
)(per_element("quantized_elementwise_cost", "element-wise", ops=1))

# An addition or multiplication with its ReLU fused: the float model's two ops.
quantized_elementwise_relu_cost = builtin(
    "quantized::add_relu", "quantized::add_relu_out", "quantized::add_scalar_relu", "quantized::add_scalar_relu_out",
    "quantized::mul_relu", "quantized::mul_relu_out", "quantized::mul_scalar_relu", "quantized::mul_scalar_relu_out",
    "onednn::qadd_relu",
)(per_element("quantized_elementwise_relu_cost", "element-wise", ops=2))

# Their input is `qx`, `input` or `self`: priced per output element (the same number).
quantized_batch_norm_cost = builtin(
    "quantized::batch_norm", "quantized::batch_norm1d", "quantized::batch_norm2d", "quantized::batch_norm3d",
    "quantized::batch_norm_relu", "quantized::batch_norm1d_relu", "quantized::batch_norm2d_relu",
    "quantized::batch_norm3d_relu", "quantized_batch_norm", "onednn::qbatch_norm2d",
)(per_element("quantized_batch_norm_cost", "norm", macs=1))

quantized_layer_norm_cost = builtin("quantized::layer_norm", "quantized::group_norm", "quantized::instance_norm")(
    per_element("quantized_layer_norm_cost", "norm", macs=2, ops=3))

quantized_activation_cost = builtin(
    "quantized::relu6", "quantized::hardswish", "quantized::sigmoid", "quantized::leaky_relu", "quantized::elu",
    "quantized::celu", "quantized::clamp", "quantized::threshold", "quantized::prelu",
)(per_element("quantized_activation_cost", "activation", ops=1))

quantized_softmax_cost = builtin("quantized::softmax")(per_element("quantized_softmax_cost", "activation", ops=3))



@builtin("quantized::max_pool1d", "quantized::max_pool2d", "quantized_max_pool1d", "quantized_max_pool2d",
         "quantized_max_pool3d")
def quantized_pool_cost(*_: Any, kernel_size: Any, out: Any, **named: Any) -> Cost:
    """As max pooling (the input is `qx` or aten's `self`)."""
    return pool_cost(named["qx"] if "qx" in named else named["input"], kernel_size, out=out)
