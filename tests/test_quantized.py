"""Quantized models (torch.ao.quantization on the CPU, fbgemm / qnnpack kernels): hand-derived counts.

Quantized kernels do not run on meta tensors: every model here is counted by one real CPU pass. Their
weights live in packed params (no nn.Parameters): parameters are counted by unpacking them.
"""
import json
import warnings

import pytest
import torch
from torch import nn

import cnnprof
from cnnprof.counting.formulas import lookup
from tests.test_results import PaddedEncoder

try:  # deprecated in torch 2.10: without it the model tests skip, the op-level cases still run
    import torch.ao.quantization as tq
except ImportError:  # pragma: no cover
    tq = None

ENGINE = next((e for e in ("fbgemm", "x86", "qnnpack") if e in torch.backends.quantized.supported_engines), None)
pytestmark = [pytest.mark.skipif(ENGINE is None, reason="this torch build has no quantized CPU engine"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")]
needs_ao = pytest.mark.skipif(tq is None, reason="torch.ao.quantization is gone from this torch")
q, aten = torch.ops.quantized, torch.ops.aten


def _q(*shape, dtype=torch.quint8):
    """A quantized tensor of uniform [0, 1) values."""
    return torch.quantize_per_tensor(torch.rand(shape), 0.01, 0 if dtype == torch.qint8 else 10, dtype)


def _w(*shape):
    return _q(*shape, dtype=torch.qint8)


def _cell(i, h, gates):
    """The CellParamsBase of one dynamic int8 RNN layer and direction: packed W_ih (G*H x I), W_hh (G*H x H)."""
    return q.make_quantized_cell_params_dynamic(q.linear_prepack(_w(gates * h, i)), q.linear_prepack(_w(gates * h, h)),
                                                torch.zeros(gates * h), torch.zeros(gates * h))


# formula -> (op, args (made when the test runs: packed params are real CPU objects), hand-derived cost)
QUANTIZED_CASES = {
    # grouped 3x3, 2 groups, padding 1: 2 x 16 x 100 outputs x 4 x 9 weights
    "quantized_conv_cost": (q.conv2d.new, lambda: (_q(2, 8, 10, 10), q.conv2d_prepack(
        _w(16, 4, 3, 3), None, [1, 1], [1, 1], [1, 1], 2), 0.1, 0), ("grouped conv", 2 * 16 * 100 * 4 * 9, 0)),
    "quantized_linear_cost": (q.linear_dynamic.default, lambda: (torch.rand(2, 6, 7), q.linear_prepack(_w(11, 7))),
                              ("linear", 2 * 6 * 7 * 11, 0)),
    "quantized_matmul_cost": (q.matmul.default, lambda: (_q(3, 5, 7), _q(3, 7, 11), 0.1, 0),
                              ("linear", 3 * 5 * 7 * 11, 0)),
    # 1 layer, 1 direction, T=4, B=3, I=6, H=5: T x B x 4H x (I + H)
    "quantized_rnn_cost": (aten.quantized_lstm.input, lambda: (
        torch.rand(4, 3, 6), [torch.zeros(1, 3, 5), torch.zeros(1, 3, 5)], [_cell(6, 5, 4)], True, 1, 0.0, False,
        False, False), ("linear", 4 * 3 * 20 * 11, 0)),
    "quantized_rnn_cell_cost": (q.quantized_gru_cell_dynamic.default, lambda: (
        torch.rand(3, 6), torch.zeros(3, 5), q.linear_prepack(_w(15, 6)), q.linear_prepack(_w(15, 5)), torch.zeros(15),
        torch.zeros(15)), ("linear", 3 * 15 * 11, 0)),
    "quantized_elementwise_cost": (q.mul.default, lambda: (_q(2, 8, 5, 5), _q(2, 8, 5, 5), 0.1, 0),
                                   ("element-wise", 0, 400)),
    "quantized_elementwise_relu_cost": (q.add_relu.default, lambda: (_q(2, 8, 5, 5), _q(2, 8, 5, 5), 0.1, 0),
                                        ("element-wise", 0, 800)),
    "quantized_batch_norm_cost": (q.batch_norm2d.default, lambda: (
        _q(2, 8, 5, 5), torch.ones(8), torch.zeros(8), torch.zeros(8), torch.ones(8), 1e-5, 0.1, 0), ("norm", 400, 0)),
    "quantized_layer_norm_cost": (q.layer_norm.default, lambda: (_q(2, 5, 8), [8], torch.ones(8), torch.zeros(8), 1e-5,
                                                                 0.1, 0), ("norm", 160, 240)),
    "quantized_activation_cost": (q.hardswish.default, lambda: (_q(2, 8, 5, 5), 0.1, 0), ("activation", 0, 400)),
    "quantized_softmax_cost": (q.softmax.default, lambda: (_q(4, 10), -1, 0.1, 0), ("activation", 0, 120)),
    # 3x3 windows, stride 2: 2 x 8 x 2 x 2 outputs x 9
    "quantized_pool_cost": (aten.quantized_max_pool2d.default, lambda: (_q(2, 8, 5, 5), [3, 3], [2, 2]),
                            ("pooling", 0, 2 * 8 * 4 * 9)),
}


@pytest.mark.parametrize("name", sorted(QUANTIZED_CASES))
def test_quantized_formula_matches_hand_derived_cost(name):
    op, make_args, expected = QUANTIZED_CASES[name]
    args = make_args()
    formula, _ = lookup(op)  # the OpOverload, as the counter passes it: arguments bound by name
    assert formula.formula.__name__ == name
    assert tuple(formula(args, {}, op(*args))) == expected


@pytest.fixture(autouse=True)
def _engine():
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = ENGINE
    yield
    torch.backends.quantized.engine = before


class Net(nn.Module):
    """conv 3x3 (+ReLU, fused), depthwise 3x3, pointwise 1x1 + residual add-ReLU, max pool, linear."""

    def __init__(self):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv, self.relu = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.dw, self.pw = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1)
        self.add = nn.quantized.FloatFunctional()
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.relu(self.conv(self.quant(x)))
        x = self.add.add_relu(self.pw(self.dw(x)), x)
        return self.dequant(self.fc(self.pool(x).flatten(1)))


X = (2, 3, 8, 8)
# conv: 2 x 8 x 64 outputs x 3*9; depthwise: 2 x 8 x 64 x 9; pointwise: 2 x 8 x 64 x 8; linear: 2 x 10 x 128
CONV, DW, PW, FC = 2 * 8 * 64 * 27, 2 * 8 * 64 * 9, 2 * 8 * 64 * 8, 2 * 10 * 128


def quantize(model, *example):
    """Post-training static quantization (the conv + ReLU fused), calibrated on random inputs."""
    model = model.eval()
    model.qconfig = tq.get_default_qconfig(ENGINE)
    if hasattr(model, "relu"):
        tq.fuse_modules(model, [["conv", "relu"]], inplace=True)
    prepared = tq.prepare(model)
    with torch.no_grad():
        prepared(*(torch.rand(s) for s in example))
    return tq.convert(prepared)


@pytest.fixture(scope="module")
def qnet():
    if tq is None:
        pytest.skip("torch.ao.quantization is gone from this torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = torch.backends.quantized.engine
        torch.backends.quantized.engine = ENGINE
        torch.manual_seed(0)
        try:
            return quantize(Net(), X)
        finally:
            torch.backends.quantized.engine = before


@needs_ao
def test_static_quantized_conv_and_linear_macs_are_hand_derived_and_equal_the_float_model(qnet):
    fc = cnnprof.count_flops(qnet, X)
    assert (fc.macs, fc.method, fc.uncounted) == (CONV + DW + PW + FC, "cpu", ())
    assert {s.name: s.macs for s in fc.by_op()} == {"conv2d_relu": CONV, "conv2d": DW + PW, "linear": FC}
    assert {s.name: s.macs for s in fc.by_type()} == {"conv 3x3": CONV, "depthwise conv": DW,
                                                      "pointwise conv": PW, "linear": FC}
    assert fc.macs == cnnprof.count_flops(Net().eval(), X).macs


@needs_ao
def test_static_quantized_model_leaves_no_op_uncounted_in_the_all_scope(qnet):
    fc = cnnprof.count_flops(qnet, X, scope="all")
    ops = {s.name: s.ops for s in fc.by_op()}
    n = 2 * 8 * 64  # elements of every 8-channel feature map
    assert fc.uncounted == ()
    assert ops["quantize_per_tensor"] == 2 * 3 * 64 and ops["dequantize"] == 2 * 10
    assert ops["add_relu"] == 2 * n  # the float model's add and relu
    assert ops["quantized_max_pool2d"] == n // 4 * 4  # 2x2 window per output element
    assert fc.acts == cnnprof.count_flops(Net().eval(), X).acts


@needs_ao
def test_packed_weights_are_counted_as_parameters_with_their_dtype(qnet):
    pc = cnnprof.count_params(qnet)
    weights = 8 * 3 * 9 + 8 * 9 + 8 * 8 + 10 * 128
    biases = 8 + 8 + 8 + 10
    assert (pc.total, pc.trainable) == (weights + biases, 0)
    assert pc.total == cnnprof.count_params(Net()).total
    assert dict(pc.packed) == {"qint8": weights, "float32": biases}
    assert dict(pc.by_type) == {"conv 3x3": 8 * 27 + 8, "depthwise conv": 8 * 9 + 8, "pointwise conv": 8 * 8 + 8,
                                "linear": 10 * 128 + 10}
    assert pc.to_dict()["packed_params"] == {"qint8": weights, "float32": biases}
    assert "packed quantized weights and biases (qint8 1,632, float32 34)" in pc.render(width=200)
    assert cnnprof.count_flops(qnet, X).params == pc.total


def test_float_models_show_no_packed_params():
    pc = cnnprof.count_params(Net())
    assert pc.packed == () and "packed_params" not in pc.to_dict() and "packed" not in pc.render(width=200)


class Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv1d = nn.Conv1d(4, 6, 3)
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)

    def forward(self, x, y):
        return self.dequant(self.conv1d(self.quant(x))), self.dequant(self.up(self.quant(y)))


@needs_ao
def test_quantized_conv1d_and_transposed_conv():
    """conv1d (packed as 2-d, kernel 1 x 3): 2 x 6 x 8 outputs x 4 x 3; transposed, groups 2: every input
    element meets C_out/groups x k x k = 3 x 9 weights."""
    torch.manual_seed(0)
    model = Convs().eval()
    model.qconfig = tq.get_default_qconfig(ENGINE)
    model.up.qconfig = tq.default_qconfig  # transposed convs take per-tensor weights
    prepared = tq.prepare(model)
    prepared(torch.rand(2, 4, 10), torch.rand(1, 4, 5, 5))
    q = tq.convert(prepared)
    fc = cnnprof.count_flops(q, inputs=((2, 4, 10), (1, 4, 5, 5)))
    assert {s.name: s.macs for s in fc.by_type()} == {"conv 3": 2 * 6 * 8 * 12, "grouped conv": 4 * 25 * 3 * 9}
    assert fc.macs == cnnprof.count_flops(Convs().eval(), inputs=((2, 4, 10), (1, 4, 5, 5))).macs


@needs_ao
@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16])
def test_dynamic_linear_and_lstm(dtype):
    """linear_dynamic (fp16: linear_dynamic_fp16): 5 x 7 rows x 16 x 32; quantized_lstm, 2 layers,
    bidirectional: T x B x 4H x (I + H) per layer and direction, layer 1 reading both directions (I = 2H)."""
    torch.manual_seed(0)

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lstm = nn.Linear(16, 32), nn.LSTM(32, 8, num_layers=2, bidirectional=True)

        def forward(self, x):
            return self.lstm(self.fc(x))[0]

    q = tq.quantize_dynamic(Seq().eval(), {nn.Linear, nn.LSTM}, dtype=dtype)
    fc = cnnprof.count_flops(q, (5, 7, 16))
    lstm = 35 * 2 * 32 * ((32 + 8) + (16 + 8))
    assert ({s.name: s.macs for s in fc.by_op()}, fc.method, fc.uncounted) == (
        {"linear_dynamic_fp16" if dtype == torch.float16 else "linear_dynamic": 35 * 16 * 32,
         "quantized_lstm": lstm}, "cpu", ())
    assert fc.macs == cnnprof.count_flops(Seq().eval(), (5, 7, 16)).macs
    pc = cnnprof.count_params(q)
    assert pc.total == cnnprof.count_params(Seq()).total and pc.trainable == 0
    assert {d for d, _ in pc.packed} == ({"qint8", "float32"} if dtype == torch.qint8 else {"float32"})


@needs_ao
def test_dynamic_lstm_cell_and_quantized_matmul():
    """quantized_lstm_cell_dynamic: B x 4H x (I + H); quantized::matmul: k MACs per output element."""
    torch.manual_seed(0)
    cell = tq.quantize_dynamic(nn.Sequential(nn.LSTMCell(6, 4)).eval(), {nn.LSTMCell}, dtype=torch.qint8)
    fc = cnnprof.count_flops(cell, (3, 6))
    assert ({s.name: s.macs for s in fc.by_op()}, fc.uncounted) == ({"quantized_lstm_cell_dynamic": 3 * 16 * 10}, ())

    class MatMul(nn.Module):
        def forward(self, a, b):
            qa, qb = (torch.quantize_per_tensor(t, 0.1, 0, torch.quint8) for t in (a, b))
            return torch.ops.quantized.matmul(qa, qb, 0.1, 0).dequantize()

    fc = cnnprof.count_flops(MatMul(), inputs=((2, 3, 5), (2, 5, 4)))
    assert [(s.name, s.macs) for s in fc.by_op()] == [("matmul", 2 * 3 * 4 * 5)]


def test_quantized_formulas_are_registered_in_their_scopes():
    assert lookup(q.conv2d.new)[1] == lookup(q.linear.default)[1] == lookup(q.linear_dynamic.default)[1] == "conv"
    assert lookup(q.add_relu.default)[1] == lookup(torch.ops.aten.dequantize.self)[1] == "all"


@needs_ao
def test_dynamic_quantized_transformer_with_a_padding_mask_is_counted_on_its_dense_path():
    """A real CPU pass (quantized linear kernels) with a key padding mask: the nested-tensor fast path stays
    off while counting, so the count is the dense path's, as the float encoder's on meta, never a misfit."""
    torch.manual_seed(0)
    inputs = ((2, 10, 32), "2,10:bool")
    q = tq.quantize_dynamic(PaddedEncoder().eval(), {nn.Linear}, dtype=torch.qint8)
    fc = cnnprof.count_flops(q, inputs=inputs)
    per_layer = 3 * 20 * 32 * 32 + 2 * (2 * 4 * 10 * 10 * 8) + 20 * 32 * 32 + 2 * 20 * 32 * 64
    assert (fc.macs, fc.method, fc.uncounted) == (2 * per_layer, "cpu", ())
    assert fc.macs == cnnprof.count_flops(PaddedEncoder().eval(), inputs=inputs).macs
    assert torch.backends.mha.get_fastpath_enabled()


QUANTIZED_MODELS = '''
import torch
from torch import nn
import torch.ao.quantization as tq


def tiny(quantize: bool = False):
    """A conv and a linear layer, statically quantized when asked (as torchvision's quantization models)."""
    model = nn.Sequential(tq.QuantStub(), nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5),
                          tq.DeQuantStub()).eval()
    if not quantize:
        return model
    model.qconfig = tq.get_default_qconfig("ENGINE")
    prepared = tq.prepare(model)
    prepared(torch.rand(1, 3, 8, 8))
    return tq.convert(prepared)
'''


@needs_ao
def test_cli_counts_a_quantized_model_built_from_a_spec(cli, tmp_path):
    path = tmp_path / "qmodels.py"
    path.write_text(QUANTIZED_MODELS.replace("ENGINE", ENGINE))
    rows = {}
    for quantize in ("true", "false"):
        result = cli("flops", f"{path}:tiny", "--set", f"quantize={quantize}", "--input-shape", "1,3,8,8",
                     "--format", "json")
        assert result.exit_code == 0, result.stderr
        rows[quantize] = json.loads(result.stdout)[0]
    assert rows["true"]["macs"] == rows["false"]["macs"] == 4 * 36 * 27 + 5 * 144
    assert (rows["true"]["method"], rows["true"]["uncounted_ops"]) == ("cpu", {})
    assert rows["true"]["params"] == rows["false"]["params"] == 4 * 27 + 4 + 5 * 144 + 5
    params = cli("params", f"{path}:tiny", "--set", "quantize=true", "--format", "json")
    assert params.exit_code == 0, params.stderr
    assert json.loads(params.stdout)[0]["packed_params"] == {"qint8": 4 * 27 + 5 * 144, "float32": 4 + 5}
