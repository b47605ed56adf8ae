"""Op formulas against closed forms (hypothesis) and hand-derived counts on tiny nets."""
import dataclasses

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import cnnprof
from cnnprof.counting.flops import op_stats
from cnnprof.counting.trace import Tracer
from cnnprof.counting.formulas import FORMULAS, lookup
from cnnprof.models.blocks import get_block
from tests.conftest import ZOO
from tests.test_quantized import QUANTIZED_CASES

small = st.integers(min_value=1, max_value=8)
FAST = settings(max_examples=40, deadline=None)


def out_size(n, k, s, p):
    return (n + 2 * p - k) // s + 1


@FAST
@given(g=small, a=small, b=small, k=st.sampled_from([1, 3, 5, 7]), h=st.integers(7, 40), w=st.integers(7, 40),
       s=st.sampled_from([1, 2]), n=st.integers(1, 4))
def test_grouped_conv_costs_cin_cout_over_g_hw_k2(g, a, b, k, h, w, s, n):
    cin, cout = g * a, g * b
    conv = nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False)
    fc = cnnprof.count_flops(conv, (n, cin, h, w))
    ho, wo = out_size(h, k, s, k // 2), out_size(w, k, s, k // 2)
    assert fc.macs == n * cin * cout // g * ho * wo * k * k
    assert fc.flops("nvidia") == 2 * fc.flops("macc")


@FAST
@given(c=small, k=st.sampled_from([3, 5]), h=st.integers(4, 30))
def test_depthwise_conv_is_groups_equal_cin(c, k, h):
    conv = nn.Conv2d(8 * c, 8 * c, k, 1, k // 2, groups=8 * c, bias=False)
    fc = cnnprof.count_flops(conv, (1, 8 * c, h, h))
    assert fc.macs == 8 * c * h * h * k * k
    assert [s.name for s in fc.by_type()] == ["depthwise conv"]


@FAST
@given(c=st.integers(1, 32), h=st.integers(2, 24), w=st.integers(2, 24))
def test_resnet_bottleneck_costs_17_hw_c2(c, h, w):
    block = get_block("bottleneck")(4 * c, 4 * c, 1)
    assert cnnprof.count_flops(block, (1, 4 * c, h, w)).macs == 17 * h * w * c * c


@FAST
@given(c=st.integers(1, 16), g=st.sampled_from([1, 2, 4, 8, 32]), d=st.integers(1, 8), h=st.integers(2, 16))
def test_resnext_block_costs_8Cc_plus_9c2_hw_g(c, g, d, h):
    # G groups of d channels; block input and output 4C channels.
    block = get_block("bottleneck")(4 * c, 4 * c, 1, bottleneck_ratio=g * d / (4 * c), groups=g)
    assert cnnprof.count_flops(block, (1, 4 * c, h, h)).macs == (8 * c * d + 9 * d * d) * h * h * g


@FAST
@given(fin=st.integers(1, 300), fout=st.integers(1, 300), batch=st.integers(1, 5), bias=st.booleans())
def test_linear_costs_in_times_out_per_row(fin, fout, batch, bias):
    fc = cnnprof.count_flops(nn.Linear(fin, fout, bias=bias), (batch, fin))
    assert fc.macs == batch * fin * fout
    assert fc.flops("nvidia") == 2 * fc.macs


def test_linear_on_channels_last_tensor_counts_every_position():
    fc = cnnprof.count_flops(nn.Linear(96, 384), (2, 56, 56, 96))
    assert fc.macs == 2 * 56 * 56 * 96 * 384


class Tiny(nn.Module):
    """conv -> BN -> ReLU -> residual add -> maxpool -> global pool -> LayerNorm -> linear, by hand."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.act(self.bn(self.conv(x))) + x
        return self.fc(self.norm(self.gap(self.pool(y)).flatten(1)))


def test_all_scope_formulas_on_a_tiny_net():
    n = 2 * 4 * 8 * 8  # elements of the 2x4x8x8 feature map
    fc = cnnprof.count_flops(Tiny(), (2, 4, 8, 8), scope="all")
    by_type = {s.name: (s.macs, s.ops) for s in fc.by_type()}
    assert by_type["conv 3x3"] == (n * 4 * 9, 0)
    assert by_type["linear"] == (2 * 4 * 3, 0)
    assert by_type["norm"] == (n + 2 * 2 * 4, 3 * 2 * 4)  # BN: 1 MAC/elem; LN: 2 MACs + 3 ops/elem
    assert by_type["activation"] == (0, n)
    assert by_type["element-wise"] == (0, n)
    assert by_type["pooling"] == (0, (n // 4) * 4 + n // 4)  # max 2x2: 4 per output; GAP: 1 per input
    assert fc.flops("macc") == fc.macs + fc.other_ops
    assert fc.flops("nvidia") == 2 * fc.macs + fc.other_ops
    conv_only = cnnprof.count_flops(Tiny(), (2, 4, 8, 8), scope="conv")
    assert conv_only.macs == n * 4 * 9 + 2 * 4 * 3 and conv_only.other_ops == 0


def macs_under_both_grad_modes(model, x) -> list[int]:
    """MACs counted under no_grad (decomposed aten ops) and inference_mode (composite ops); none uncounted."""
    totals = []
    for ctx in (torch.no_grad, torch.inference_mode):
        tracer = Tracer()
        with ctx(), tracer:
            model(x)
        assert not tracer.uncounted
        totals.append(sum(s.macs for s in op_stats(tracer.events)))
    return totals


def test_composite_ops_under_inference_mode_cost_the_same_as_decomposed_ones():
    totals = macs_under_both_grad_modes(cnnprof.build_model("mobilenet_v3_small").eval(), torch.zeros(1, 3, 64, 64))
    assert totals[0] == totals[1] == cnnprof.count_flops("mobilenet_v3_small", (1, 3, 64, 64), scope="all").macs


def test_ops_without_a_formula_are_reported_not_dropped():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.linalg.cross(x, x)  # no formula: a cross product is no layer of a CNN

    fc = cnnprof.count_flops(Odd(), (4, 3))
    assert dict(fc.uncounted) == {"linalg_cross": 1}


def test_inplace_variants_share_formulas():
    assert lookup("relu_")[0].formula is FORMULAS["relu"].formula
    assert lookup(torch.ops.aten.add_.Tensor)[0].formula is FORMULAS["add"].formula
    assert lookup("convolution")[1] == "conv" and lookup("relu")[1] == "all"


def test_breakdowns_add_up():
    fc = cnnprof.count_flops("resnet18", scope="all")
    total = fc.macs + fc.other_ops
    for shares in (fc.by_type(), fc.by_op(), fc.by_stage()):
        assert sum(s.macs + s.ops for s in shares) == total
    assert [s.name for s in fc.by_stage()] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    rows = dict(fc.by_module(depth=1))
    assert rows[""].macs + rows[""].ops == total
    assert all(name.count(".") == 0 for name in rows)


def test_counting_does_not_depend_on_batch_cost():
    one = cnnprof.count_flops("resnet50", (1, 3, 224, 224)).macs
    assert cnnprof.count_flops("resnet50", (8, 3, 224, 224)).macs == 8 * one


def _meta(*shape, channels_last=False):
    t = torch.empty(*shape, device="meta")
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


FAST_CASES = [
    (torch.ops.aten.relu.default, (_meta(2, 8, 5, 5),)),
    (torch.ops.aten.relu_.default, (_meta(2, 8, 5, 5, channels_last=True),)),
    (torch.ops.aten.hardswish.default, (_meta(2, 8, 5, 5, channels_last=True),)),
    (torch.ops.aten.gelu.default, (_meta(2, 5, 5, 32),)),
    (torch.ops.aten.native_batch_norm.default,
     (_meta(2, 8, 5, 5, channels_last=True), _meta(8), _meta(8), _meta(8), _meta(8), False, 0.1, 1e-5)),
    (torch.ops.aten._native_batch_norm_legit_no_training.default,
     (_meta(2, 8, 5, 5), _meta(8), _meta(8), _meta(8), _meta(8), 0.1, 1e-5)),
    (torch.ops.aten.native_layer_norm.default, (_meta(2, 8, 5, 6).permute(0, 2, 3, 1), [8], _meta(8), _meta(8), 1e-6)),
    (torch.ops.aten.add.Tensor, (_meta(2, 8, 5, 5), _meta(2, 8, 5, 5))),
    (torch.ops.aten.add.Tensor, (_meta(2, 8, 5, 5, channels_last=True), _meta(2, 8, 5, 5, channels_last=True))),
    (torch.ops.aten.mul.Tensor, (_meta(2, 8, 5, 5), _meta(2, 8, 1, 1))),
    (torch.ops.aten.mul.Tensor, (_meta(2, 5, 5, 8), _meta(8))),
    (torch.ops.aten.add_.Tensor, (_meta(2, 8, 5, 5), _meta(2, 8, 5, 5))),
    (torch.ops.aten.mean.dim, (_meta(2, 8, 5, 5), [-1, -2], True)),
    (torch.ops.aten.mean.dim, (_meta(2, 8, 5, 5), [1])),
    (torch.ops.aten.mean.default, (_meta(2, 8, 5, 5),)),
    (torch.ops.aten.addmm.default, (_meta(6), _meta(3, 5), _meta(5, 6))),
    (torch.ops.aten.mm.default, (_meta(3, 5), _meta(5, 6))),
    (torch.ops.aten.bmm.default, (_meta(2, 3, 5), _meta(2, 5, 6))),
    (torch.ops.aten.cat.default, ([_meta(2, 3, 5, 5), _meta(2, 4, 5, 5)], 1)),
    (torch.ops.aten.cat.default, ([_meta(2, 3), _meta(1, 3)],)),
    (torch.ops.aten.convolution.default, (_meta(2, 8, 9, 9), _meta(16, 4, 3, 3), None, [2, 2], [1, 1], [1, 1],
                                          False, [0, 0], 2)),
    (torch.ops.aten.convolution.default, (_meta(2, 8, 5, 5), _meta(8, 3, 3, 3), _meta(3), [2, 2], [1, 1], [1, 1],
                                          True, [1, 1], 1)),
    (torch.ops.aten.convolution.default, (_meta(2, 4, 7), _meta(6, 4, 3), None, [1], [0], [2], False, [0], 1)),
    (torch.ops.aten.max_pool2d_with_indices.default, (_meta(2, 8, 112, 112), [3, 3], [2, 2], [1, 1])),
    (torch.ops.aten.max_pool2d_with_indices.default, (_meta(2, 8, 13, 13), [3, 3], [2, 2], [0, 0], [1, 1], True)),
    (torch.ops.aten.max_pool2d_with_indices.default, (_meta(2, 8, 8, 8), [2, 2])),
    (torch.ops.aten._adaptive_avg_pool2d.default, (_meta(2, 8, 13, 13), [6, 6])),
    (torch.ops.aten.convolution.default, (_meta(1, 3, 4, 6, 6), _meta(2, 3, 3, 3, 3), None, [1, 1, 1], [0, 0, 0],
                                          [1, 1, 1], False, [0, 0, 0], 1)),
]


def test_fast_meta_outputs_match_torchs_meta_kernels():
    from cnnprof.counting.meta_fast import fast_meta

    for op, args in FAST_CASES:
        ours = fast_meta(op.overloadpacket.__name__, args)
        theirs = op(*args)
        ours, theirs = (ours, theirs) if isinstance(theirs, tuple) else ((ours,), (theirs,))
        assert [(t.shape, t.stride(), t.dtype) for t in ours] == [(t.shape, t.stride(), t.dtype) for t in theirs], op
    assert fast_meta("add", (torch.zeros(2),)) is None  # real tensors always run the real kernel
    assert fast_meta("div", (torch.empty(2, dtype=torch.int64, device="meta"), 2)) is None  # int division promotes


@pytest.mark.parametrize("name", [n if n in ("mobilenet_v2", "convnext_tiny") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in ZOO])
def test_fast_path_does_not_change_any_count(monkeypatch, name):
    import cnnprof.counting.trace as trace

    fast = cnnprof.count_flops(name, (2, 3, 96, 96), scope="all")
    monkeypatch.setattr(trace, "fast_meta", lambda *_: None)
    slow = cnnprof.count_flops(name, (2, 3, 96, 96), scope="all")
    assert set(fast.records) == set(slow.records) and fast.uncounted == slow.uncounted


def _m(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


aten = torch.ops.aten
# formula function -> (aten op, args, hand-derived (type, MACs, ops))
FORMULA_CASES = {
    "conv_cost": (aten.convolution.default, (_m(2, 8, 10, 10), _m(16, 4, 3, 3), None, [1, 1], [1, 1], [1, 1], False,
                                            [0, 0], 2), ("grouped conv", 2 * 16 * 100 * 4 * 9, 0)),
    # transposed, 2 groups: every one of the 2*8*5*5 inputs meets C_out/groups = 3 filters of 3x3.
    "conv_transpose_cost": (aten.conv_transpose2d.input, (_m(2, 8, 5, 5), _m(8, 3, 3, 3), None, [1, 1], [0, 0], [0, 0],
                                                           2), ("grouped conv", 2 * 8 * 25 * 3 * 9, 0)),
    "matmul_cost": (aten.bmm.default, (_m(3, 5, 7), _m(3, 7, 11)), ("linear", 3 * 5 * 7 * 11, 0)),
    "addmm_cost": (aten.addmm.default, (_m(11), _m(5, 7), _m(7, 11)), ("linear", 5 * 7 * 11, 0)),
    "linear_cost": (aten.linear.default, (_m(2, 6, 7), _m(11, 7), _m(11)), ("linear", 2 * 6 * 7 * 11, 0)),
    "batch_norm_cost": (aten._native_batch_norm_legit_no_training.default,
                        (_m(2, 8, 5, 5), _m(8), _m(8), _m(8), _m(8), 0.1, 1e-5), ("norm", 400, 0)),
    "layer_norm_cost": (aten.native_layer_norm.default, (_m(2, 5, 8), [8], _m(8), _m(8), 1e-6), ("norm", 160, 240)),
    "activation_cost": (aten.hardswish.default, (_m(2, 8, 5, 5),), ("activation", 0, 400)),
    "softmax_cost": (aten._softmax.default, (_m(4, 10), -1, False), ("activation", 0, 120)),
    "elementwise_cost": (aten.mul.Tensor, (_m(2, 8, 5, 5), _m(2, 8, 1, 1)), ("element-wise", 0, 400)),
    "pool_cost": (aten.max_pool2d_with_indices.default, (_m(1, 4, 8, 8), [3, 3], [2, 2], [1, 1]),
                  ("pooling", 0, 4 * 4 * 4 * 9)),
    "reduce_cost": (aten.mean.dim, (_m(2, 8, 5, 5), [2, 3], True), ("pooling", 0, 400)),
    # fp8 matmul: (16 x 32) @ (32 x 48) is 16 * 48 outputs of a 32-long dot product; the scales are free.
    "scaled_mm_cost": (aten._scaled_mm.default, (_m(16, 32, dtype=torch.float8_e4m3fn),
                                                 _m(48, 32, dtype=torch.float8_e4m3fn).t(), _m(()), _m(())),
                       ("linear", 16 * 48 * 32, 0)),
    # batch 2 x 3 heads, L=5 queries of E=8 against S=7 keys: Q K^T 2*3*5*7*8 + A V (E_v=8) 2*3*5*7*8.
    "sdpa_cost": (aten._scaled_dot_product_flash_attention_for_cpu.default, (_m(2, 3, 5, 8), _m(2, 3, 7, 8),
                                                                             _m(2, 3, 7, 8)),
                  ("attention", 2 * 3 * 5 * 7 * 8 * 2, 0)),
    # the same attention in the kernels' (batch, L, heads, E) layout.
    "flash_attention_cost": (aten._flash_attention_forward.default,
                             (_m(2, 5, 3, 8, dtype=torch.half), _m(2, 7, 3, 8, dtype=torch.half),
                              _m(2, 7, 3, 8, dtype=torch.half), None, None, 5, 7, 0.0, False, False),
                             ("attention", 2 * 3 * 5 * 7 * 8 * 2, 0)),
    # E=16, 4 heads, L=5 queries, S=7 keys, batch 2: projections Q 2*5*16*16, K and V 2*7*16*16 each,
    # output 2*5*16*16; attention per head 5*7*4 twice, x 4 heads x batch 2.
    "multi_head_attention_cost": (aten._native_multi_head_attention.default,
                                  (_m(2, 5, 16), _m(2, 7, 16), _m(2, 7, 16), 16, 4, _m(48, 16), _m(48), _m(16, 16),
                                   _m(16)),
                                  ("attention", (2 * 5 + 2 * 7 * 2 + 2 * 5) * 16 * 16 + 2 * 4 * 5 * 7 * 4 * 2, 0)),
    "reduce_or_binary_cost": (aten.amin.default, (_m(2, 8, 5, 5), [1]), ("pooling", 0, 400)),
    "cumulative_cost": (aten.cumsum.default, (_m(3, 7), 1), ("element-wise", 0, 21)),
    # x[idx] += v with 3 rows of 4 values: 12 adds.
    "index_put_cost": (aten.index_put.default, (_m(5, 4), [torch.zeros(3, dtype=torch.long, device="meta")], _m(3, 4),
                                                True), ("element-wise", 0, 12)),
    # 2 x (3 channels x 2x2 patch) x 9 positions of columns, each added into a 4x4 image: 2 * 12 * 9 adds.
    "fold_cost": (aten.col2im.default, (_m(2, 12, 9), [4, 4], [2, 2], [1, 1], [0, 0], [1, 1]),
                  ("element-wise", 0, 2 * 12 * 9)),
    # 2 x 8 groups of 5: 80 square-accumulates (MACs), 80 mean + 80 centring ops.
    "variance_cost": (aten.var_mean.correction, (_m(2, 8, 5), [2]), ("norm", 80, 160)),
    # 2-norm over the last axis of 2x3x4: 24 square-accumulates + 6 square roots.
    "vector_norm_cost": (aten.linalg_vector_norm.default, (_m(2, 3, 4), 2, [2]), ("norm", 24, 6)),
    # 1x2x8x8 outputs, each a weighted sum of 4 inputs.
    "linear_interpolate_cost": (aten.upsample_bilinear2d.default, (_m(1, 2, 4, 4), [8, 8], False),
                                ("interpolation", 4 * 2 * 64, 0)),
    "nonzero_cost": (aten.nonzero.default, (torch.zeros(3, 7),), ("selection", 0, 21)),  # data-dependent: CPU
    # 4 rows of 8: each row 8 x log2(8) = 24 comparisons.
    "sort_cost": (aten.sort.default, (_m(4, 8),), ("selection", 0, 4 * 24)),
    # 3 rows of 10 through a 4-element heap: 10 x log2(4) each; dim given.
    "topk_cost": (aten.topk.default, (_m(10, 3), 4, 0), ("selection", 0, 3 * 10 * 2)),
    # 16 elements: sorted (16 x 4) and scanned once (16).
    "unique_cost": (aten._unique2.default, (torch.zeros(4, 4),), ("selection", 0, 16 * 4 + 16)),
    "bicubic_cost": (aten.upsample_bicubic2d.default, (_m(1, 2, 4, 4), [8, 8], False),
                     ("interpolation", 16 * 2 * 64, 0)),
    # antialiased, 8x8 -> 4x4 (in/out = 2): the bicubic filter widens to 4 x 2 = 8 taps per axis, so every one
    # of the 1x3x4x4 outputs is a weighted sum of 8 x 8 inputs.
    "bicubic_aa_cost": (aten._upsample_bicubic2d_aa.default, (_m(1, 3, 8, 8), [4, 4], False),
                        ("interpolation", 8 * 8 * 3 * 16, 0)),
    # antialiased bilinear 12x12 -> 4x6: 2 x 3 = 6 taps along H, 2 x 2 = 4 along W, for 2 x 4 x 6 outputs.
    "bilinear_aa_cost": (aten._upsample_bilinear2d_aa.default, (_m(1, 2, 12, 12), [4, 6], False),
                         ("interpolation", 6 * 4 * 2 * 4 * 6, 0)),
    # bilinear grid sampling (mode 0): 1x3 channels at 5x6 grid points, each 4 neighbours weighted.
    "grid_sample_cost": (aten.grid_sampler_2d.default, (_m(1, 3, 8, 8), _m(1, 5, 6, 2), 0, 0, False),
                         ("interpolation", 4 * 3 * 5 * 6, 0)),
    # CPU LSTM layer (mode 2), T=3 steps x B=5, I=8, H=16: W_ih 4H x I and W_hh 4H x H meet all 15 rows.
    "rnn_layer_cost": (aten.mkldnn_rnn_layer.default, (_m(3, 5, 8), _m(64, 8), _m(64, 16), _m(64), _m(64),
                                                       _m(5, 16), _m(5, 16), False, [], 2, 16, 1, True, False, False,
                                                       False),
                       ("linear", 3 * 5 * 4 * 16 * (8 + 16), 0)),
    # cuDNN GRU (mode 3), 2 layers, bidirectional, batch first: B=5, T=3, I=8, H=16. Layer 0 reads I=8, layer
    # 1 the 2H=32 outputs of both directions: 15 rows x 2 directions x (3H x (8 + 16) + 3H x (32 + 16)).
    "rnn_cost": (aten._cudnn_rnn.default, (_m(5, 3, 8), [_m(48, 8), _m(48, 16), _m(48), _m(48)] * 2
                                           + [_m(48, 32), _m(48, 16), _m(48), _m(48)] * 2, 4, None, _m(4, 5, 16),
                                           None, 3, 16, 0, 2, True, 0.0, False, True, [], None),
                 ("linear", 15 * 2 * (48 * 24 + 48 * 48), 0)),
    # CUDA LSTMCell's fused step on B=5, H=16: 13 element-wise ops per hidden element (see recurrent.py).
    "rnn_cell_cost": (aten._thnn_fused_lstm_cell.default, (_m(5, 64), _m(5, 64), _m(5, 16), _m(64), _m(64)),
                      ("element-wise", 0, 13 * 5 * 16)),
    # Backward (formulas/backward.py). Conv backward, 2 groups: input grad and weight grad each the forward's
    # 2 x 16 x 100 x (4 x 9) MACs; the bias grad (mask[2]) is not counted.
    "conv_backward_cost": (aten.convolution_backward.default, (_m(2, 16, 10, 10), _m(2, 8, 10, 10), _m(16, 4, 3, 3),
                                                               [16], [1, 1], [1, 1], [1, 1], False, [0, 0], 2,
                                                               [True, True, True]), ("grouped conv", 2 * 2 * 16 * 100 * 36, 0)),
    # n = 400 elements: input grad 2n MACs + n ops; gamma sum(g x_hat) n MACs, beta sum(g) n ops.
    "batch_norm_backward_cost": (aten.native_batch_norm_backward.default,
                                 (_m(2, 8, 5, 5), _m(2, 8, 5, 5), _m(8), None, None, _m(8), _m(8), True, 1e-5,
                                  [True, True, True]), ("norm", 3 * 400, 2 * 400)),
    # n = 80, gamma and beta frozen: the input grad still needs both sums, 3n MACs + 2n ops.
    "layer_norm_backward_cost": (aten.native_layer_norm_backward.default,
                                 (_m(2, 5, 8), _m(2, 5, 8), [8], _m(2, 5, 1), _m(2, 5, 1), _m(8), _m(8),
                                  [True, False, False]), ("norm", 3 * 80, 2 * 80)),
    "activation_backward_cost": (aten.threshold_backward.default, (_m(2, 8, 5, 5), _m(2, 8, 5, 5), 0),
                                 ("activation", 0, 400)),
    "softmax_backward_cost": (aten._softmax_backward_data.default, (_m(4, 10), _m(4, 10), -1, torch.float32),
                              ("activation", 0, 120)),
    # each of the 1 x 4 x 4 x 4 gradients goes back to its argmax
    "scatter_backward_cost": (aten.max_pool2d_with_indices_backward.default,
                              (_m(1, 4, 4, 4), _m(1, 4, 8, 8), [3, 3], [2, 2], [1, 1], [1, 1], False,
                               _m(1, 4, 4, 4, dtype=torch.int64)), ("pooling", 0, 64)),
    "avg_pool_backward_cost": (aten.avg_pool2d_backward.default,
                               (_m(1, 4, 4, 4), _m(1, 4, 8, 8), [3, 3], [2, 2], [1, 1], False, True, None),
                               ("pooling", 0, 64 * 9)),
    "adaptive_pool_backward_cost": (aten._adaptive_avg_pool2d_backward.default, (_m(2, 8, 1, 1), _m(2, 8, 5, 5)),
                                    ("pooling", 0, 400)),
    "linear_interpolate_backward_cost": (aten.upsample_bilinear2d_backward.default,
                                         (_m(1, 2, 8, 8), [8, 8], [1, 2, 4, 4], False, None, None),
                                         ("interpolation", 4 * 128, 0)),
}

# More than one case for formulas that branch on their arguments or the op name.
EXTRA_CASES = [
    # no meta kernel: tiny CPU tensors.
    (aten._slow_conv2d_forward.default, (torch.zeros(2, 8, 10, 10), torch.zeros(16, 8, 3, 3), [3, 3], None, [2, 2],
                                         [1, 1]),
     ("conv 3x3", 2 * 16 * 25 * 8 * 9, 0)),
    (aten.max.default, (_m(2, 8, 5, 5),), ("pooling", 0, 400)),  # max over everything: 1 op per input
    (aten.max.dim, (_m(2, 8, 5, 5), 1), ("pooling", 0, 400)),
    (aten.maximum.default, (_m(2, 8, 5, 5), _m(8, 1, 1)), ("element-wise", 0, 400)),
    (aten.max.other, (_m(2, 8, 5, 5), _m(8, 1, 1)), ("element-wise", 0, 400)),  # binary: 1 per output
    (aten.index_put.default, (_m(5, 4), [torch.zeros(3, dtype=torch.long, device="meta")], _m(3, 4)),
     ("element-wise", 0, 0)),  # plain x[idx] = v: a copy
    (aten.topk.default, (_m(3, 10), 1), ("selection", 0, 30)),  # k = 1: one comparison per element
    (aten.sort.default, (_m(2, 1), 0), ("selection", 0, 2)),  # 1 row of 2 along dim 0: one comparison
    (aten.linalg_vector_norm.default, (_m(2, 3, 4), 1, [2]), ("norm", 0, 2 * 24 + 6)),  # |x| + accumulate
    (aten.linalg_vector_norm.default, (_m(2, 3, 4),), ("norm", 24, 1)),  # default: 2-norm of everything
    (aten.upsample_linear1d.default, (_m(1, 2, 4), [8], False), ("interpolation", 2 * 16, 0)),
    (aten.upsample_trilinear3d.default, (_m(1, 2, 2, 4, 4), [4, 8, 8], False), ("interpolation", 8 * 2 * 256, 0)),
    (aten._safe_softmax.default, (_m(4, 10), -1), ("activation", 0, 120)),
    (aten.masked_fill.Scalar, (_m(2, 3, 4), _m(2, 3, 4, dtype=torch.bool), 0.0), ("element-wise", 0, 24)),
    (aten.gt.Tensor, (_m(2, 3, 4), _m(4)), ("element-wise", 0, 24)),
    (aten._scaled_dot_product_efficient_attention.default, (_m(2, 3, 5, 8), _m(2, 3, 7, 8), _m(2, 3, 7, 8), None,
                                                             False), ("attention", 2 * 3 * 5 * 7 * 16, 0)),
    (aten.scaled_dot_product_attention.default, (_m(2, 3, 5, 8), _m(2, 3, 7, 8), _m(2, 3, 7, 8)),
     ("attention", 2 * 3 * 5 * 7 * 16, 0)),  # the composite, seen whole under inference_mode
    # grouped-query attention: 6 query heads share 2 key/value heads; every query head attends.
    (aten._scaled_dot_product_attention_math_for_mps.default, (_m(1, 6, 5, 8), _m(1, 6, 7, 8), _m(1, 6, 7, 4)),
     ("attention", 6 * 5 * 7 * (8 + 4), 0)),
    # antialiased upsampling is the plain filter: bicubic 4 x 4 per output, as upsample_bicubic2d.
    (aten._upsample_bicubic2d_aa.default, (_m(1, 2, 4, 4), [8, 8], False), ("interpolation", 16 * 2 * 64, 0)),
    # 7 -> 3 (in/out = 7/3): 4 x 7/3 = 9.33 taps, ceil 10 per axis (the kernel's window is 9 or 10 wide).
    (aten._upsample_bicubic2d_aa.default, (_m(1, 1, 7, 7), [3, 3], False), ("interpolation", 10 * 10 * 9, 0)),
    # align_corners: in/out is (in - 1) / (out - 1) = 2 for 9 -> 5, so 8 bicubic taps per axis.
    (aten._upsample_bicubic2d_aa.default, (_m(1, 1, 9, 9), [5, 5], True), ("interpolation", 8 * 8 * 25, 0)),
    (aten.grid_sampler_2d.default, (_m(1, 3, 8, 8), _m(1, 5, 6, 2), 1, 0, False), ("interpolation", 0, 0)),  # nearest
    (aten.grid_sampler_2d.default, (_m(1, 3, 8, 8), _m(1, 5, 6, 2), 2, 0, False),  # bicubic: 4 x 4 neighbours
     ("interpolation", 16 * 3 * 5 * 6, 0)),
    (aten.grid_sampler_3d.default, (_m(1, 2, 4, 4, 4), _m(1, 3, 3, 3, 3), 0, 0, False),  # trilinear: 8 neighbours
     ("interpolation", 8 * 2 * 27, 0)),
    # cuDNN LSTM with proj_size P=4 (I=8, H=16): W_ih 4H x I, W_hh 4H x P and W_hr P x H per row.
    (aten._cudnn_rnn.default, (_m(3, 5, 8), [_m(64, 8), _m(64, 4), _m(64), _m(64), _m(4, 16)], 5, None, _m(1, 5, 4),
                               _m(1, 5, 16), 2, 16, 4, 1, False, 0.0, False, False, [], None),
     ("linear", 15 * (64 * 8 + 64 * 4 + 4 * 16), 0)),
    (aten.miopen_rnn.default, (_m(3, 5, 8), [_m(64, 8), _m(64, 16)], 2, _m(1, 5, 16), _m(1, 5, 16), 2, 16, 1, False,
                               0.0, False, False, [], None), ("linear", 15 * 64 * 24, 0)),  # no biases
]


# torchvision's own ops (detection): called by name on shapes, as torchvision is not a dependency.
# formula -> (op name, args, output, hand-derived (type, MACs, ops))
TORCHVISION_CASES = {
    # 5 boxes: sort 5 x ceil(log2 5) = 15, areas 3 x 5, IoU of 10 pairs x 13.
    "nms_cost": ("torchvision::nms", (_m(5, 4), _m(5), 0.5), _m(3), ("selection", 0, 15 + 15 + 130)),
    # 3 boxes x 8 channels x 7x7 bins, 2x2 samples of 4 MACs each, plus the average.
    "roi_align_cost": ("torchvision::roi_align", (_m(1, 8, 32, 32), _m(3, 5), 0.25, 7, 7, 2, False), _m(3, 8, 7, 7),
                       ("pooling", 3 * 8 * 49 * 16, 3 * 8 * 49)),
}


def test_antialiased_bicubic_given_scale_factors():
    """The `.vec` overload gives scale factors instead of a size: in/out is 1 / (1/3) = 3, so 12 taps per axis."""
    op = aten._upsample_bicubic2d_aa.vec
    args = (_m(1, 1, 9, 9), None, False, [1 / 3, 1 / 3])
    assert tuple(lookup(op)[0](args, {}, op(*args))) == ("interpolation", 12 * 12 * 9, 0)


def test_fused_gru_cell_costs_ten_ops_per_hidden_element():
    """_thnn_fused_gru_cell has no meta kernel: its formula on its outputs (hy B x H, workspace B x 5H)."""
    formula, scope = lookup(aten._thnn_fused_gru_cell.default)
    out = (_m(5, 16), _m(5, 80))
    assert scope == "all"
    assert tuple(formula((_m(5, 48), _m(5, 48), _m(5, 16)), {}, out)) == ("element-wise", 0, 10 * 5 * 16)


def test_embedding_is_a_free_lookup():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(100, 16), nn.Linear(16, 4)

        def forward(self, ids):
            return self.fc(self.emb(ids))

    fc = cnnprof.count_flops(Tokens(), inputs="2,8:int64", scope="all")
    assert fc.uncounted == () and (fc.macs, fc.other_ops) == (2 * 8 * 16 * 4, 0)  # the linear layer only
    assert [s.name for s in fc.by_op()] == ["addmm"]


class GatedLSTM(nn.Module):
    """A 2-layer bidirectional LSTM (I=8, H=16, batch first); with `gate`, the sequences it runs on are picked
    by value (torch.nonzero), so the model cannot run on meta: a real CPU pass, whose LSTM is mkldnn_rnn_layer."""

    def __init__(self, gate: bool):
        super().__init__()
        self.gate = gate
        self.lstm = nn.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True)

    def forward(self, x):
        if self.gate:
            x = x[torch.nonzero(x.sum((1, 2)) >= 0).squeeze(1)]  # inputs in [0, 1): every sequence is kept
        return self.lstm(x)[0]


def test_fused_cpu_lstm_costs_what_the_meta_decomposition_costs():
    real = cnnprof.count_flops(GatedLSTM(gate=True), (5, 3, 8), scope="all")
    meta = cnnprof.count_flops(GatedLSTM(gate=False), (5, 3, 8), scope="all")
    assert (real.method, meta.method) == ("cpu", "meta")
    assert real.uncounted == () and "mkldnn_rnn_layer" in {s.name for s in real.by_op()}
    # B=5 x T=3 rows, 2 directions; layer 0: 4H x (I + H), layer 1 reads both directions: 4H x (2H + H).
    hand = 5 * 3 * 2 * (4 * 16 * (8 + 16) + 4 * 16 * (32 + 16))
    assert dataclasses.replace(real, scope="conv").macs == dataclasses.replace(meta, scope="conv").macs == hand


@pytest.mark.parametrize("rnn, mode", [(nn.GRU(8, 16, num_layers=2, bidirectional=True, batch_first=True), 3),
                                       (nn.LSTM(8, 16, proj_size=4), 2)], ids=["gru", "lstm_proj"])
def test_cudnn_rnn_formula_equals_the_meta_decomposition(rnn, mode):
    """_cudnn_rnn (mode 3 GRU, 2 LSTM) on the weights nn.GRU / nn.LSTM hand it costs what meta counts."""
    x, layers = _m(5, 3, 8), rnn.num_layers * (2 if rnn.bidirectional else 1)
    batch = 5 if rnn.batch_first else 3
    hx = _m(layers, batch, rnn.proj_size or rnn.hidden_size)
    cx = _m(layers, batch, rnn.hidden_size) if mode == 2 else None
    args = (x, rnn._flat_weights, len(rnn._flat_weights) // layers, None, hx, cx, mode, rnn.hidden_size,
            rnn.proj_size, rnn.num_layers, rnn.batch_first, 0.0, False, rnn.bidirectional, [], None)
    formula, scope = lookup(aten._cudnn_rnn.default)
    meta = cnnprof.count_flops(rnn.to("meta"), inputs=x).macs
    assert scope == "conv" and formula(args, {}, aten._cudnn_rnn.default(*args)).macs == meta


def test_every_formula_has_a_hand_derived_case():
    assert {entry.formula.__name__ for entry in FORMULAS.values()} == (set(FORMULA_CASES) | set(TORCHVISION_CASES)
                                                                      | set(QUANTIZED_CASES))


@pytest.mark.parametrize("name", sorted(TORCHVISION_CASES))
def test_torchvision_op_formula_matches_hand_derived_cost(name):
    op, args, out, expected = TORCHVISION_CASES[name]
    formula, _ = lookup(op)  # no torchvision: a name, so the arguments go by position
    assert formula.formula.__name__ == name
    assert tuple(formula(args, {}, out)) == expected


@pytest.mark.parametrize("name", sorted(FORMULA_CASES))
def test_formula_matches_hand_derived_cost(name):
    op, args, expected = FORMULA_CASES[name]
    formula, _ = lookup(op)  # the OpOverload, as the counter passes it: arguments bound by name
    assert formula.formula.__name__ == name
    assert tuple(formula(args, {}, op(*args))) == expected


@pytest.mark.parametrize("op, args, expected", EXTRA_CASES, ids=lambda v: getattr(v, "__name__", None))
def test_branching_formulas_match_hand_derived_cost(op, args, expected):
    formula, _ = lookup(op)
    assert tuple(formula(args, {}, op(*args))) == expected


@pytest.mark.parametrize("op, args, expected", EXTRA_CASES, ids=lambda v: getattr(v, "__name__", None))
def test_formulas_looked_up_by_name_take_positional_arguments(op, args, expected):
    """By name (no single schema) the arguments go by position: the same costs for these calls."""
    formula, _ = lookup(op.overloadpacket.__name__)
    assert tuple(formula(args, {}, op(*args))) == expected


def test_attention_is_counted_in_the_conv_scope_like_flop_counter():
    from torch.utils.flop_counter import flop_registry

    # flex_attention is a higher-order op, not an aten op: it refuses meta tensors, so it never reaches a formula.
    counted = {op.__name__ for op in flop_registry if not op.__name__.endswith("backward")} - {"flex_attention"}
    assert {name for name in counted if lookup(name)[1] != "conv"} == set()


def test_sdpa_on_meta_counts_the_math_decomposition_exactly():
    class Attend(nn.Module):
        def forward(self, x):
            q = x.view(2, 5, 3, 8).transpose(1, 2)  # batch 2, 3 heads, L=5, E=8
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    fc = cnnprof.count_flops(Attend(), (2, 5, 24), scope="all")
    assert fc.uncounted == ()
    assert dataclasses.replace(fc, scope="conv").macs == 2 * 3 * 5 * 5 * 8 * 2  # Q K^T and A V
    # all scope adds the scaling of q and k (1 op per element each) and the softmax (3 ops per score).
    assert fc.other_ops == 2 * (2 * 3 * 5 * 8) + 3 * (2 * 3 * 5 * 5)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_transposed_conv_costs_the_same_under_inference_mode(dims):
    conv = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose1d
    model = conv(4, 6, 3, stride=2, groups=2, bias=False).to("meta").eval()
    macs = macs_under_both_grad_modes(model, torch.empty(1, 4, *(5,) * dims, device="meta"))
    assert macs == [4 * 5 ** dims * 3 * 3 ** dims] * 2  # every input meets C_out/groups = 3 filters of 3^d


def test_nearest_upsampling_is_free_and_bilinear_is_priced():
    class Up(nn.Module):
        def forward(self, x):
            near = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
            return near + torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear")

    fc = cnnprof.count_flops(Up(), (1, 3, 4, 4), scope="all")
    assert fc.uncounted == ()
    assert {s.name: (s.macs, s.ops) for s in fc.by_type()} == {"interpolation": (4 * 3 * 64, 0),
                                                                "element-wise": (0, 3 * 64)}


class SelfAttention(nn.Module):
    """scaled_dot_product_attention over 3 heads (batch 2, L=5, E=8)."""

    def forward(self, x):
        q = x.view(2, 5, 3, 8).transpose(1, 2)
        return torch.nn.functional.scaled_dot_product_attention(q, q, q)


class MultiHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(24, 4, batch_first=True)  # fast path: even heads, batch first

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("model, fused_op", [(SelfAttention, "_scaled_dot_product_flash_attention_for_cpu"),
                                             (MultiHead, "_native_multi_head_attention")])
def test_fused_attention_costs_what_its_math_decomposition_costs(model, fused_op):
    def conv_macs(net, x):
        tracer = Tracer()
        with torch.no_grad(), tracer:
            net(x)
        assert not tracer.uncounted
        stats = op_stats(tracer.events)
        return sum(s.macs for s in stats if s.scope == "conv"), {s.op for s in stats}

    net = model().eval()
    fused, fused_ops = conv_macs(net, torch.randn(2, 5, 24))  # real CPU tensors take the fused kernel
    math, math_ops = conv_macs(net.to("meta"), torch.empty(2, 5, 24, device="meta"))  # meta: decomposition
    assert fused_op in fused_ops and fused_op not in math_ops
    assert fused == math
