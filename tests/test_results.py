"""Typed results: every result prints as its CLI table, and to_dict() is the CLI's JSON row; profile() and
compare() from one op trace; a user's own module counted as a unit; the one trace and its views."""
import json

import pytest
import torch
from torch import nn

import cnnprof
from cnnprof.counting.run import trace_model
from cnnprof.predict.device import datasheet


class Block(nn.Module):
    """A user's block: a 3x3 conv and a residual add."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1, bias=False)
        self.block = Block()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = self.block(self.stem(x))
        return self.head(y.mean((2, 3)))


X = (2, 3, 6, 6)


def cli_rows(cli, *args):
    """The CLI's JSON rows less `overrides`, the --set values the CLI applied (an API result has none)."""
    rows = cli.json(*args)
    return [{k: v for k, v in r.items() if k != "overrides"} for r in rows]
STEM, CONV, HEAD = 2 * 8 * 36 * 3, 2 * 8 * 36 * 8 * 9, 2 * 4 * 8  # MACs, derived by hand


def test_print_and_to_dict_of_a_flop_count_match_the_cli(cli):
    fc = cnnprof.count_flops("mobilenet_v2")
    assert fc.to_dict() == cli_rows(cli, "flops", "mobilenet_v2")[0]
    text = str(fc)
    assert "FLOPs per forward pass" in text and "mobilenet_v2" in text and "300.77 M" in text


def test_print_and_to_dict_of_params_profile_and_comparison_match_the_cli(cli):
    pc = cnnprof.count_params("resnet18")
    assert pc.model == "resnet18" and pc.to_dict() == cli_rows(cli, "params", "resnet18")[0]
    assert "11,689,512" in str(pc)
    c = cnnprof.compare(["resnet50", "resnext50_32x4d"])
    assert c.to_dict() == cli_rows(cli, "compare", "resnet50", "resnext50_32x4d")
    assert "Model comparison" in str(c) and "0.98×" in str(c)
    p = cnnprof.profile("resnet50")
    row = cli_rows(cli, "compare", "resnet50", "resnet18")[0]
    assert p.to_dict() == {k: v for k, v in row.items() if not k.endswith("_ratio")}
    assert "Profile at 1×3×224×224" in str(p) and "vs ref" not in str(p)


def test_prediction_and_device_profile_print_as_their_commands(cli):
    pred = cnnprof.profile("resnet18", device_profile=datasheet("h100")).prediction
    assert [pred.to_dict()] == cli_rows(cli, "roofline", "resnet18", "--by", "type", "--device-spec", "h100")
    assert "H100" in str(pred) and "Roofline" in str(pred)
    device = datasheet("h100")
    assert [device.to_dict()] == cli_rows(cli, "device", "--device-spec", "h100")
    assert "H100" in str(device)


def test_profile_of_a_user_module_leaves_it_untouched_and_predicts_from_the_same_trace():
    net = Net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    p = cnnprof.profile(net, X, device_profile=datasheet("h100"))
    assert p.flops.macs == STEM + CONV + HEAD and p.params.total == 8 * 3 + 8 * 8 * 9 + 8 * 4 + 4
    assert all(t.device.type == "cpu" for t in net.parameters())  # never moved to meta
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert p.prediction is not None and sum(c.macs for c in p.prediction.memory.calls) == p.flops.macs + 0 * HEAD


def test_profile_and_compare_check_their_options():
    with pytest.raises(cnnprof.errors.CnnprofError, match="unknown convention"):
        cnnprof.profile("resnet18", convention="tensor")
    with pytest.raises(cnnprof.errors.CnnprofError, match="at least two"):
        cnnprof.compare(["resnet18"])


def test_a_module_class_is_counted_as_a_unit_per_call_and_registered():
    def block_cost(module, x, *, out):
        return cnnprof.Cost("my block", 1000, 7)

    fc = cnnprof.count_flops(Net(), X, formulas={Block: block_cost})
    assert fc.macs == STEM + HEAD + 1000  # the block's own conv and add are not traced
    assert ("block", "Block", "my block", "conv") in {(r.module, r.op, r.type, r.scope) for r in fc.records}
    assert cnnprof.count_flops(Net(), X, scope="all", formulas={Block: (block_cost, "all")}).macs == \
        STEM + HEAD + 1000
    assert cnnprof.count_flops(Net(), X, formulas={Block: (block_cost, "all")}).macs == STEM + HEAD
    cnnprof.register_formula(Block, block_cost)
    try:
        assert cnnprof.count_flops(Net(), X).macs == STEM + HEAD + 1000
        with pytest.raises(ValueError, match="already registered"):
            cnnprof.register_formula(Block, block_cost)
    finally:
        cnnprof.unregister_formula(Block)
    assert cnnprof.count_flops(Net(), X).macs == STEM + CONV + HEAD


def test_a_unit_formula_sees_the_modules_inputs_and_output():
    seen = {}

    def block_cost(module, x, *, out):
        seen.update(module=module, x=tuple(x.shape), out=tuple(out.shape))
        return cnnprof.Cost("my block", x.numel(), 0)

    net = Net()
    fc = cnnprof.count_flops(net, X, formulas={Block: block_cost})
    assert seen == {"module": net.block, "x": (2, 8, 6, 6), "out": (2, 8, 6, 6)}
    assert fc.macs == STEM + HEAD + 2 * 8 * 36


def test_bad_unit_formulas_are_refused():
    with pytest.raises(ValueError, match="scope"):
        cnnprof.count_flops(Net(), X, formulas={Block: (lambda m, x, out: None, "layer")})
    with pytest.raises(TypeError, match="callable"):
        cnnprof.count_flops(Net(), X, formulas={Block: 3})


def test_one_trace_gives_the_flops_the_traffic_and_the_shapes():
    from cnnprof.counting.flops import flop_count
    from cnnprof.counting.traffic import memory_profile

    trace = trace_model(Net(), X)
    assert trace.params == 8 * 3 + 8 * 8 * 9 + 8 * 4 + 4 and trace.method == "meta"
    assert flop_count(trace).macs == STEM + CONV + HEAD
    convs = [e for e in trace.events if e.op_type.startswith("conv ") or e.op_type == "pointwise conv"]
    assert [(e.module, e.macs) for e in convs] == [("stem", STEM), ("block.conv", CONV)]
    mem = memory_profile(trace, "float16")
    conv = next(c for c in mem.calls if c.module == "block.conv")
    assert conv.bytes_read == 2 * (2 * 8 * 36 + 8 * 8 * 9) and conv.bytes_written == 2 * 2 * 8 * 36
    assert dict((n, o) for n, _, o in trace.module_shapes)["block"] == (2, 8, 6, 6)


def test_trace_is_public_and_serialisable():
    trace = cnnprof.trace("resnet18")
    assert trace.label == "resnet18" and len(trace.events) > 50
    json.dumps([e._asdict() for e in trace.events[:3]])


def test_compare_times_models_interleaved_from_the_api():
    c = cnnprof.compare([Net(), Net()], inputs=X, bench=cnnprof.BenchSettings(warmup=0.0, min_time=0.05, min_runs=3))
    rows = c.to_dict()
    assert [r["bench_status"] for r in rows] == ["ok", "ok"] and rows[0]["latency_ratio"] == 1.0
    assert all(r["latency_ms"] > 0 for r in rows) and "Latency (ms)" in c.render(width=200)
    assert c.failures() == []


class PaddedEncoder(nn.Module):
    """Two transformer encoder layers (width 32, 4 heads) called with a key padding mask: in eval mode torch's
    nested-tensor fast path (also tests/test_quantized.py's, dynamically quantized)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2,
                                         enable_nested_tensor=True)

    def forward(self, x, mask):
        return self.enc(x, src_key_padding_mask=mask)


def test_transformer_with_a_padding_mask_is_counted_on_its_dense_path():
    """In eval mode a key padding mask sends nn.TransformerEncoder down its nested-tensor fast path, which has
    no meta sizes: counting turns the fast path off and counts the dense math path, and turns it back on."""
    # per layer, 20 tokens: q, k, v projections 3 x 20 x 32 x 32; scores and weighted sum 2 x (2 x 4 heads x 10 x
    # 10 x 8); out projection 20 x 32 x 32; feed-forward 20 x 32 x 64 + 20 x 64 x 32
    per_layer = 3 * 20 * 32 * 32 + 2 * (2 * 4 * 10 * 10 * 8) + 20 * 32 * 32 + 2 * 20 * 32 * 64
    fc = cnnprof.count_flops(PaddedEncoder().eval(), inputs=((2, 10, 32), "2,10:bool"))
    assert (fc.macs, fc.method, fc.uncounted) == (2 * per_layer, "meta", ())
    assert torch.backends.mha.get_fastpath_enabled()
