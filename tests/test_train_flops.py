"""Training FLOPs (`mode="train"`, `--mode train`): hand-derived backward counts of conv, depthwise conv, linear,
batch norm, attention and a frozen backbone; the conv scope equals FlopCounterMode's backward count on every zoo
model; breakdowns per phase; the model left as it was; the CLI's options and errors."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnprof
from cnnprof.counting.flops import FORWARD, GRAD_INPUT, GRAD_WEIGHT
from cnnprof.errors import CnnprofError
from cnnprof.counting.train import GRAD_INPUT as TRACE_INPUT, fast_backward_meta, train_trace
from cnnprof.models.spec import resolve
from tests.conftest import ZOO

aten = torch.ops.aten


def train(model, inputs, scope="conv", **options):
    return cnnprof.count_flops(model, inputs=inputs, scope=scope, mode="train", **options)


def parts(fc):
    """(forward, grad-input, grad-weight) MACs of a training step in its scope."""
    return tuple(fc.part(p).macs for p in (FORWARD, GRAD_INPUT, GRAD_WEIGHT))


# ----------------------------------------------------------------------------- hand-derived counts


def test_conv_backward_is_input_grad_and_weight_grad_each_the_forward_and_the_first_layer_has_no_input_grad():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1))
    first = 2 * 8 * 8 * 8 * (3 * 9)  # N x C_out x H x W x (C_in x k x k)
    second = 2 * 16 * 8 * 8 * (8 * 9)
    fc = train(net, (2, 3, 8, 8))
    assert parts(fc) == (first + second, second, first + second)
    assert fc.macs == 2 * first + 3 * second
    layers = dict(fc.part(GRAD_INPUT).by_module())
    assert "0" not in layers and layers["1"].macs == second


def test_depthwise_weight_grad_is_the_forward_not_groups_times_it():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 4, 3, padding=1, groups=4))
    each = 1 * 4 * 6 * 6 * 9  # C_in/groups = 1 weight per tap
    fc = train(net, (1, 4, 6, 6))
    assert parts(fc) == (2 * each, each, 2 * each)
    assert {s.name for s in fc.backward.by_type()} == {"depthwise conv"}


def test_linear_backward_is_two_matmuls_but_the_first_layer_needs_only_the_weight_one():
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    fc = train(net, (3, 10))
    assert parts(fc) == (3 * 10 * 20 + 3 * 20 * 5, 3 * 20 * 5, 3 * 10 * 20 + 3 * 20 * 5)
    weight = dict(fc.part(GRAD_WEIGHT).by_module())
    assert weight["0"].macs == 3 * 10 * 20 and weight["2"].macs == 3 * 20 * 5


def test_batch_norm_backward_in_the_all_scope():
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    n = 2 * 4 * 5 * 5
    norm = lambda fc: [s for s in fc.by_type() if s.name == "norm"]  # noqa: E731
    fc = train(net, (2, 3, 5, 5), scope="all")
    assert [(s.macs, s.ops) for s in norm(fc.forward)] == [(2 * n, 3 * n)]  # batch statistics: as layer norm
    # gamma: sum(g * x_hat), 1 MAC; beta: sum(g), 1 op; input: 2 MACs + 1 op per element
    assert [(s.macs, s.ops) for s in norm(fc.part(GRAD_WEIGHT))] == [(n, n)]
    assert [(s.macs, s.ops) for s in norm(fc.part(GRAD_INPUT))] == [(2 * n, n)]
    frozen = train(net, (2, 3, 5, 5), scope="all", frozen=["1"])  # the input gradient still needs both sums
    assert norm(frozen.part(GRAD_WEIGHT)) == []
    assert [(s.macs, s.ops) for s in norm(frozen.part(GRAD_INPUT))] == [(3 * n, 2 * n)]


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24, bias=False)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return F.scaled_dot_product_attention(q, k, v)


def test_attention_backward_is_four_matmuls_of_input_gradient_and_the_projection_weight():
    fc = train(Attention(), (2, 4, 8))
    scores = 2 * 4 * 4 * 8  # batch x L x S x E: one of Q K^T, A V
    projection = 2 * 4 * 8 * 24
    assert parts(fc) == (projection + 2 * scores, 4 * scores, projection)
    assert dict(fc.part(GRAD_WEIGHT).by_module()).keys() == {"", "qkv"}


def test_a_frozen_backbone_has_only_the_head_weight_gradient():
    fc = train(resolve("resnet18"), (1, 3, 224, 224), frozen=["stem", "stage*"])
    assert fc.part(GRAD_INPUT).macs == 0
    assert fc.part(GRAD_WEIGHT).macs == 512 * 1000
    assert fc.trainable == 512 * 1000 + 1000
    assert fc.forward.macs == cnnprof.count_flops(resolve("resnet18")).macs


def test_requires_grad_false_freezes_as_the_pattern_does_and_the_flags_stay():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    for p in net[0].parameters():
        p.requires_grad_(False)
    flags = [p.requires_grad for p in net.parameters()]
    by_flag = train(net, (1, 3, 8, 8), scope="all")
    net[0].requires_grad_(True)
    by_pattern = train(net, (1, 3, 8, 8), scope="all", frozen=["0"])
    net[0].requires_grad_(False)
    assert by_flag.records == by_pattern.records and by_flag.trainable == by_pattern.trainable
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(p.grad is None for p in net.parameters())


# ----------------------------------------------------------------------------- FlopCounterMode's backward count


def flop_counter_backward_macs(model, shape, groups_fixed=True) -> float:
    """FlopCounterMode's count of autograd's backward (train() mode, a gradient of ones on every floating output,
    math attention), / 2: the independent reference for the training FLOPs, also of the optional real-model group.
    torch <= 2.14's formula for a grouped conv's weight gradient omits the division by groups (pytorch#183405 adds
    it); `groups_fixed` applies that fix, as the upstream PR does. The model's training flag is restored."""
    from torch.func import functional_call
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop

    raw = getattr(conv_backward_flop, "__wrapped__", conv_backward_flop)

    def fixed(grad_out, x, w, bias, stride, padding, dilation, transposed, output_padding, groups, output_mask,
              out_shape, **_):
        args = (grad_out, x, w, bias, stride, padding, dilation, transposed, output_padding, groups)
        return (raw(*args, [output_mask[0], False, False], out_shape)
                + raw(*args, [False, output_mask[1], False], out_shape) // groups)

    tensors = {n: torch.empty_like(t, device="meta").requires_grad_(isinstance(t, nn.Parameter) and t.requires_grad
                                                                   and t.is_floating_point())
               for n, t in [*model.named_parameters(), *model.named_buffers()]}
    was = model.training
    model.train()
    try:
        with sdpa_kernel(SDPBackend.MATH):
            out = functional_call(model, tensors, (torch.empty(shape, device="meta"),), strict=False)
            roots = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
            mapping = {aten.convolution_backward: fixed} if groups_fixed else {}
            with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
                torch.autograd.backward(roots, [torch.ones_like(t) for t in roots])
    finally:
        model.train(was)
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("name", ZOO)
def test_backward_equals_flop_counter_on_every_zoo_model(name):
    model = resolve(name).build("meta")
    fc = train(model, (1, 3, 224, 224), scope="all")
    assert fc.uncounted == ()
    assert fc.backward.part(GRAD_INPUT, GRAD_WEIGHT).macs > 0
    conv = cnnprof.count_flops(model, inputs=(1, 3, 224, 224), mode="train")
    assert conv.backward.macs == flop_counter_backward_macs(model, (1, 3, 224, 224))


def test_without_grouped_convs_the_unpatched_flop_counter_agrees_too():
    model = resolve("resnet50").build("meta")
    assert train(model, (1, 3, 224, 224)).backward.macs == flop_counter_backward_macs(model, (1, 3, 224, 224), False)


def test_attention_backward_equals_flop_counter():
    assert train(Attention(), (2, 4, 8)).backward.macs == flop_counter_backward_macs(Attention(), (2, 4, 8))


# ----------------------------------------------------------------------------- trace, breakdowns, untouched


def test_every_backward_op_is_attributed_to_a_module_and_stages_add_up():
    fc = train(resolve("resnet18"), (1, 3, 224, 224), scope="all")
    stages = {s.name: s.macs for s in fc.backward.by_stage()}
    assert list(stages) == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert sum(stages.values()) == fc.backward.macs
    conv = train(resolve("resnet18"), (1, 3, 224, 224))  # the first conv's input needs no gradient; its norm's does
    assert "stem" not in {s.name for s in conv.part(GRAD_INPUT).by_stage()}
    assert "stem" in {s.name for s in conv.part(GRAD_WEIGHT).by_stage()}
    assert fc.acts == cnnprof.count_flops(resolve("resnet18")).acts  # activations are the forward's
    calls = {s.name: s.calls for s in fc.by_op()}  # one conv backward call computes both gradients: one call
    assert calls["convolution_backward"] == calls["convolution"] == 20


def test_the_trace_keeps_one_gradient_kind_per_backward_event():
    trace = train_trace(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), (1, 4))
    assert len(trace.grads) == len(trace.backward) and TRACE_INPUT in trace.grads


def test_a_real_cpu_model_is_left_as_it_was():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        before = net(x)
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    train(net, (1, 3, 8, 8), scope="all")
    assert not net.training and all(p.grad is None and p.device.type == "cpu" for p in net.parameters())
    assert all(torch.equal(buffers[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        assert torch.equal(net(x), before)


class DataDependent(nn.Module):
    """nonzero has no meta kernel: counted by one real training step on the CPU."""

    def __init__(self):
        super().__init__()
        self.norm, self.fc = nn.BatchNorm1d(8), nn.Linear(8, 3)

    def forward(self, x):
        x = self.norm(x)
        return self.fc(x[torch.nonzero(x.sum(dim=1) > -1e9).squeeze(1)])  # every row kept


def test_a_model_that_cannot_run_on_meta_takes_one_real_step_and_is_left_as_it_was():
    net = DataDependent()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    fc = train(net, (4, 8))
    assert fc.method == "cpu" and parts(fc) == (4 * 8 * 3, 4 * 8 * 3, 4 * 8 * 3)
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())  # running statistics too


@pytest.mark.parametrize("op, args", [
    ("convolution_backward", lambda m: (torch.empty(2, 8, 6, 6, device="meta"), torch.empty(2, 3, 8, 8, device="meta"),
                                        torch.empty(8, 3, 3, 3, device="meta"), [8], [1, 1], [0, 0], [1, 1], False,
                                        [0, 0], 1, m)),
    ("native_batch_norm_backward", lambda m: (torch.empty(2, 4, 5, 5, device="meta"),
                                              torch.empty(2, 4, 5, 5, device="meta"), torch.empty(4, device="meta"),
                                              None, None, torch.empty(4, device="meta"),
                                              torch.empty(4, device="meta"), True, 1e-5, m)),
    ("native_layer_norm_backward", lambda m: (torch.empty(2, 7, 6, device="meta"), torch.empty(2, 7, 6, device="meta"),
                                              [6], torch.empty(2, 7, 1, device="meta"),
                                              torch.empty(2, 7, 1, device="meta"), torch.empty(6, device="meta"),
                                              torch.empty(6, device="meta"), m)),
])
@pytest.mark.parametrize("mask", [[True, True, True], [False, True, False], [True, False, False]])
def test_fast_backward_meta_matches_torch(op, args, mask):
    given = args(mask)
    fast, real = fast_backward_meta(op, given), getattr(aten, op).default(*given)
    for wanted, a, b in zip(mask, fast, real):
        assert (a is None) == (not wanted)
        if wanted:
            assert (a.shape, a.dtype, a.stride()) == (b.shape, b.dtype, b.stride())


def test_fast_backward_meta_of_an_activation_matches_torch():
    g, x = torch.empty(2, 3, 4, device="meta"), torch.empty(2, 3, 4, device="meta")
    fast, real = fast_backward_meta("threshold_backward", (g, x, 0)), aten.threshold_backward.default(g, x, 0)
    assert (fast.shape, fast.stride(), fast.dtype) == (real.shape, real.stride(), real.dtype)


# ----------------------------------------------------------------------------- API and CLI


def test_profile_in_train_mode_prints_and_serialises():
    p = cnnprof.profile("mobilenet_v2", mode="train")
    row = p.to_dict()
    json.dumps(row)
    assert row["mode"] == "train"
    assert row["flops"] == row["forward_flops"] + row["grad_input_flops"] + row["grad_weight_flops"]
    assert row["backward_flops"] == row["grad_input_flops"] + row["grad_weight_flops"]
    assert "Profile of a training step" in str(p) and "Train FLOPs [macc]" in str(p)


def test_library_errors_name_the_parameters():
    with pytest.raises(CnnprofError, match="`frozen`"):
        cnnprof.count_flops("resnet18", frozen=["stem"])
    with pytest.raises(CnnprofError, match="`frozen=nope`"):
        cnnprof.count_flops("resnet18", mode="train", frozen=["nope"])
    with pytest.raises(CnnprofError, match="unknown mode"):
        cnnprof.count_flops("resnet18", mode="training")


def test_cli_flops_train_rows_add_up(cli):
    rows = cli.json("flops", "resnet18", "--mode", "train", "--convention", "nvidia", "--by", "stage")
    row = rows[0]
    assert row["flops"] == row["forward_flops"] + row["backward_flops"] == 2 * row["macs"]
    assert sum(r["flops"] for r in row["by_stage"]) == row["flops"]
    assert sum(r["grad_input_flops"] for r in row["by_stage"]) == row["grad_input_flops"]


def test_cli_frozen_lowers_the_weight_gradient(cli):
    full = cli.json("flops", "resnet18", "--mode", "train")[0]
    frozen = cli.json("flops", "resnet18", "--mode", "train", "--frozen", "stem", "--frozen", "stage1")[0]
    assert frozen["frozen"] == ["stem", "stage1"] and frozen["trainable_params"] < full["trainable_params"]
    assert frozen["forward_flops"] == full["forward_flops"] and frozen["grad_weight_flops"] < full["grad_weight_flops"]


def test_cli_compare_train_mode(cli):
    rows = cli.json("compare", "resnet18", "resnet34", "--mode", "train")
    assert [r["mode"] for r in rows] == ["train", "train"]
    assert rows[1]["flops_ratio"] == rows[1]["flops"] / rows[0]["flops"]


@pytest.mark.parametrize("args, message", [
    (["flops", "resnet18", "--frozen", "stem"], "--frozen applies to a training step only; add --mode train"),
    (["flops", "resnet18", "--mode", "train", "--backend", "fvcore"], "--mode train is counted by the torch"),
    (["compare", "resnet18", "resnet34", "--mode", "train", "--bench"], "--bench is of a forward pass"),
    (["compare", "resnet18", "resnet34", "--mode", "train", "--predict"], "--predict is of a forward pass"),
])
def test_cli_refuses_what_a_training_step_cannot_do(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_a_pattern_that_names_no_parameter_is_an_error(cli):
    result = cli("flops", "resnet18", "--mode", "train", "--frozen", "nope")
    assert result.exit_code != 0 and "--frozen nope names no parameter of resnet18" in result.stderr
    assert "Traceback" not in result.stderr
