"""acts (pycls) and the ideal-cache traffic formulas, hand-derived per layer type."""
import pytest
import torch
from torch import nn

import cnnprof
from cnnprof.counting.traffic import analyze_memory
from cnnprof.models.spec import resolve


class Seq(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def one(module, shape, dtype="float32"):
    """The single op call of a one-layer model."""
    calls = analyze_memory(module, shape, dtype).calls
    assert len(calls) == 1, calls
    return calls[0]


def test_resnet50_acts_match_pycls():
    # pycls dev/model_complexity.json: ResNet-50 at 224x224 has 11,315,688 activations.
    assert cnnprof.count_flops("resnet50").acts == 11_315_688
    assert analyze_memory(resolve("resnet50")).acts == 11_315_688


@pytest.mark.parametrize("layer, shape, acts", [
    (nn.Conv2d(3, 8, 3, padding=1, bias=False), (1, 3, 10, 10), 8 * 10 * 10),
    (nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), (1, 8, 10, 10), 8 * 5 * 5),  # depthwise
    (nn.Conv2d(8, 16, 1, groups=4), (2, 8, 6, 6), 2 * 16 * 6 * 6),  # grouped, batch 2
    (nn.Linear(20, 7), (3, 20), 3 * 7),
    (nn.MaxPool2d(3, 2, 1), (1, 4, 8, 8), 4 * 4 * 4),
    (nn.AvgPool2d(2), (1, 4, 8, 8), 4 * 4 * 4),
    (nn.AdaptiveAvgPool2d(1), (1, 4, 8, 8), 0),  # global pooling adds none (pycls gap2d_cx)
    (nn.BatchNorm2d(4), (1, 4, 8, 8), 0),
    (nn.ReLU(), (1, 4, 8, 8), 0),
])
def test_acts_per_layer_type(layer, shape, acts):
    assert cnnprof.count_flops(Seq(layer.eval()), shape, scope="all").acts == acts
    assert analyze_memory(Seq(layer.eval()), shape).acts == acts


def test_conv_traffic_dense_grouped_depthwise():
    c = one(Seq(nn.Conv2d(4, 6, 3, padding=1, bias=False)), (1, 4, 5, 5))
    assert (c.bytes_read, c.bytes_written) == (4 * (4 * 25 + 6 * 4 * 9), 4 * 6 * 25)
    assert c.flops == 2 * 6 * 25 * 4 * 9 and c.intensity == pytest.approx(c.flops / c.bytes)
    g = one(Seq(nn.Conv2d(4, 8, 3, padding=1, groups=2)), (1, 4, 5, 5))  # with bias
    assert g.bytes_read == 4 * (4 * 25 + 8 * 2 * 9 + 8) and g.bytes_written == 4 * 8 * 25
    d = one(Seq(nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False)), (1, 6, 8, 8), "float16")
    assert (d.bytes_read, d.bytes_written) == (2 * (6 * 64 + 6 * 9), 2 * 6 * 16)
    assert (d.type, d.kernel, d.groups) == ("depthwise conv", (3, 3), 6)


def test_linear_norm_activation_pool_traffic():
    lin = one(Seq(nn.Linear(10, 3)), (2, 10))
    assert (lin.bytes_read, lin.bytes_written) == (4 * (20 + 30 + 3), 4 * 6)
    bn = one(Seq(nn.BatchNorm2d(5).eval()), (1, 5, 4, 4))  # x, weight, bias, running mean and var
    assert (bn.bytes_read, bn.bytes_written) == (4 * (80 + 4 * 5), 4 * 80)
    ln = one(Seq(nn.LayerNorm(6)), (1, 3, 6))
    assert (ln.bytes_read, ln.bytes_written) == (4 * (18 + 12), 4 * 18)
    act = one(Seq(nn.ReLU()), (1, 3, 4, 4))
    assert (act.bytes_read, act.bytes_written) == (4 * 48, 4 * 48)
    pool = one(Seq(nn.MaxPool2d(2)), (1, 3, 4, 4))
    assert (pool.bytes_read, pool.bytes_written) == (4 * 48, 4 * 12)
    gap = one(Seq(nn.AdaptiveAvgPool2d(1)), (1, 3, 4, 4))
    assert (gap.bytes_read, gap.bytes_written) == (4 * 48, 4 * 3)


class AddCat(nn.Module):
    def forward(self, x):
        y = x + x  # a residual-style add of two tensors of x's shape
        return torch.cat([x, y], 1)


def test_add_and_cat_traffic():
    calls = analyze_memory(AddCat(), (1, 3, 4, 4)).calls
    add, cat = calls
    assert (add.type, add.bytes_read, add.bytes_written) == ("element-wise", 4 * 96, 4 * 48)
    assert (cat.type, cat.bytes_read, cat.bytes_written) == ("memory copy", 4 * 96, 4 * 96)
    assert cat.flops == 0


def test_views_move_nothing_and_totals_add_up():
    m = analyze_memory(resolve("mobilenet_v2"), (1, 3, 64, 64))
    assert {c.op for c in m.calls}.isdisjoint({"view", "flatten", "_unsafe_view", "reshape", "permute"})
    total = m.total()
    for groups in (m.by_type(), m.by_stage(), m.by_layer(), m.by_op()):
        assert sum(s.bytes for s in groups) == total.bytes and sum(s.macs for s in groups) == total.macs
    assert total.macs == cnnprof.count_flops("mobilenet_v2", (1, 3, 64, 64), scope="all").macs
    assert analyze_memory(resolve("mobilenet_v2"), (1, 3, 64, 64), "bfloat16").bytes * 2 == total.bytes


def test_flops_and_compare_rows_carry_acts(cli):
    row = cli.json("flops", "resnet50")[0]
    assert row["acts"] == 11_315_688
    rows = cli.json("compare", "resnet50", "resnet18")
    assert rows[0]["acts"] == 11_315_688 and rows[1]["acts"] == cnnprof.count_flops("resnet18").acts
    assert "Acts" in cli("flops", "resnet18").stdout
