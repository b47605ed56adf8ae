"""Fused recurrent kernels (LSTM, GRU, RNN), priced as the decomposition the meta device counts.

On meta tensors nn.LSTM / nn.GRU / nn.RNN run ATen's composite implementation, one cell per time step: an
input projection and a hidden projection (`addmm`, scope "conv"), then the gates' element-wise ops. A real
pass runs a fused kernel instead: `mkldnn_rnn_layer` (CPU LSTM, one call per layer and direction),
`_cudnn_rnn` / `miopen_rnn` (every layer and direction in one call), or per step the projections as matmuls
followed by `_thnn_fused_lstm_cell` / `_thnn_fused_gru_cell` (CUDA LSTMCell / GRUCell). With T steps,
B sequences, G gates (LSTM 4, GRU 3, RNN 1), hidden size H and input size I of a layer, the composite does
per step B x G*H x I MACs (input projection) + B x G*H x H (hidden projection, H -> the projection size P
when `proj_size` is set, plus B x P x H for the projection itself). Summed over steps:

- whole-layer kernels, scope "conv": T x B x (elements of the layer's weight matrices) MACs, i.e.
  T x B x G*H x (I + H) per layer and direction; layer l > 0 reads the D*H outputs of both directions
  (D = 2 bidirectional), which its W_ih already has as columns. T x B is the input's rows whatever
  `batch_first` says (a packed sequence: the sum of its batch sizes). Biases are not counted (as addmm's).
- fused cells, scope "all": the gates' element-wise ops of one step, per hidden element: LSTM 13 (gates
  sum 4, cell update 1 add + 2 mul, output 1 mul, 3 sigmoid, 2 tanh), GRU 10 (4 adds, 2 mul, 1 sub,
  2 sigmoid, 1 tanh). Their matrix products are separate ops.

A whole-layer kernel is one op, and an op carries one scope: its gates' element-wise ops are not in the
`all` scope (as a fused attention kernel's softmax), so its conv scope equals the meta count exactly and its
all scope is lower by those ops.
"""
from __future__ import annotations

from typing import Any

from cnnprof.counting.formulas.common import first, numel
from cnnprof.counting.registry import Cost, builtin


def _steps_times_batch(input: Any) -> int:
    """T x B: rows of the (T, B, I) or batch-first (B, T, I) input, or of a packed (sum of batch sizes, I) one."""
    return numel(input) // input.shape[-1]


def _matrices(weights: Any) -> int:
    """Elements of the weight matrices (2-D tensors) among a layer's parameters; biases are 1-D."""
    return sum(numel(w) for w in weights if getattr(w, "ndim", 0) == 2)


@builtin("mkldnn_rnn_layer", scope="conv")
def rnn_layer_cost(input: Any, weight0: Any, weight1: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """One layer, one direction: W_ih (G*H x I) and W_hh (G*H x H) meet every one of the T x B rows."""
    return Cost("linear", _steps_times_batch(input) * _matrices((weight0, weight1)), 0)


@builtin("_cudnn_rnn", "miopen_rnn", scope="conv")
def rnn_cost(input: Any, weight: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """Every layer and direction: each layer's W_ih, W_hh (and W_hr) meet every one of the T x B rows."""
    return Cost("linear", _steps_times_batch(input) * _matrices(weight), 0)


# Element-wise ops per hidden element of one fused cell, by gates per hidden unit (LSTM 4, GRU 3).
_CELL_OPS = {4: 13, 3: 10}


@builtin("_thnn_fused_lstm_cell", "_thnn_fused_gru_cell")
def rnn_cell_cost(input_gates: Any, hidden_gates: Any, *_: Any, out: Any, **__: Any) -> Cost:
    """The gates of one step after its projections: 13 ops per hidden element (LSTM), 10 (GRU)."""
    hidden = first(out)
    gates = input_gates.shape[-1] // hidden.shape[-1]
    return Cost("element-wise", 0, _CELL_OPS.get(gates, 0) * numel(hidden))
