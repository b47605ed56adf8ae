"""Per-operator cost formulas: pure shape arithmetic on the named arguments and output of one op.

Every formula takes the op's arguments by their schema names (`input`, `weight`, `groups`, ...; aten's
`self` is `input`) and its output as `out`, and returns a Cost (layer type, MACs, other ops). They are
registered in cnnprof.counting.registry by aten op name, in-place variants (`relu_`) sharing their op's
formula; users add their own with `cnnprof.register_formula`. Both the decomposed ops seen under no_grad
(`convolution`, `addmm`, `native_batch_norm`) and the composite ones seen under inference_mode (`conv2d`,
`linear`, `batch_norm`) are covered.

Counting rules (1 MAC = one multiply-accumulate; "ops" = other elementary operations), one family a module:
- products.py, scope "conv" (papers' convention): convolution, matrix products, attention's matmuls;
  recurrent.py: fused LSTM / GRU kernels as the matmuls of their decomposition (their fused cells: "all").
- scope "all" adds pointwise.py (norms, activations, softmax, element-wise, statistics), pooling.py
  (pooling, reductions, interpolation) and detection.py (sort, topk, unique, nonzero, nms, roi_align).
- backward.py: what autograd runs in a training step (convolution_backward split into input and weight
  gradients by its output_mask, norm, activation and pooling backward), same conventions as the forward.
- free.py: data movement (view, permute, cat, roll, index, gather, embedding lookup, padding, channel
  shuffle, nearest upsampling, ...) and allocation (zeros, arange, scalar_tensor, ...) are free. Any other op that runs is
  reported as uncounted, never dropped silently.
- quantized.py: the kernels of quantized models (`quantized::conv2d`, `quantized::linear`, `linear_dynamic`, ...),
  priced as the float ops they replace, their packed weights unpacked for the shapes.
"""
from cnnprof.counting.formulas import (backward, detection, pointwise, pooling, products,  # noqa: F401 - they register
                                       quantized, recurrent)
from cnnprof.counting.formulas.free import FREE_OPS, is_free
from cnnprof.counting.registry import (FORMULAS, Cost, Formula, Registered, formulas, lookup, op_name,
                                       register_formula, resolve_formulas, unregister_formula)

__all__ = ["FORMULAS", "FREE_OPS", "Cost", "Formula", "Registered", "formulas", "is_free", "lookup", "op_name",
           "register_formula", "resolve_formulas", "unregister_formula"]
