"""Mixed precision (cnnprof memory --amp, cnnprof.memory(amp=True)): the autocast emulation on meta against real CPU
autocast (torch.autocast("cpu", dtype=torch.bfloat16)): the dtype of each op's result, what autograd saves, and
the allocator's peak of inference passes and training steps."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnprof
from cnnprof.counting.amp import Autocast, real_autocast
from cnnprof.counting.footprint import (
    footprint, make_optimizer, prime_optimizer, train_step)
from cnnprof.errors import CnnprofError
from cnnprof.models.spec import build_model
from cnnprof.timing.peak import peak_bytes, resident_bytes

import test_memory_predict as memory_tests
from conftest import ZOO

_W, _L = torch.rand(4, 4, 3, 3), torch.rand(3, 8)
# (op, its float32 arguments): under CPU autocast, conv / linear / matmul run in bfloat16, the losses and the 3-D
# pools in float32, cat promotes, everything else runs in the dtype it is given.
OPS = {
    "conv2d": (lambda x, w: F.conv2d(x, w), (torch.rand(2, 4, 8, 8), _W)),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w), (torch.rand(2, 4, 8, 8), _W)),
    "linear": (lambda x, w: F.linear(x, w), (torch.rand(2, 8), _L)),
    "matmul": (lambda a, b: a @ b, (torch.rand(2, 8), torch.rand(8, 3))),
    "bmm": (torch.bmm, (torch.rand(2, 3, 4), torch.rand(2, 4, 5))),
    "addmm": (torch.addmm, (torch.rand(3), torch.rand(2, 8), torch.rand(8, 3))),
    "einsum": (lambda a, b: torch.einsum("ij,jk->ik", a, b), (torch.rand(2, 8), torch.rand(8, 3))),
    "sdpa": (F.scaled_dot_product_attention, (torch.rand(1, 2, 4, 8),) * 3),
    "mv": (torch.mv, (torch.rand(3, 4), torch.rand(4))),
    "softmax of bf16": (lambda x: F.softmax(x.bfloat16(), -1), (torch.rand(2, 8),)),
    "layer_norm of bf16": (lambda x, w: F.layer_norm(x.bfloat16(), (8,), w), (torch.rand(2, 8), torch.ones(8))),
    "batch_norm of bf16": (lambda x, m: F.batch_norm(x.bfloat16(), m, m + 1, m + 1, m, True),
                           (torch.rand(2, 4, 3, 3), torch.zeros(4))),
    "cross_entropy of bf16": (lambda x: F.cross_entropy(x.bfloat16(), torch.zeros(2, dtype=torch.long, device=x.device)),
                              (torch.rand(2, 8),)),
    "mse_loss of bf16": (lambda x: F.mse_loss(x.bfloat16(), x.bfloat16()), (torch.rand(2, 8),)),
    "max_pool3d of bf16": (lambda x: F.max_pool3d(x.bfloat16(), 2), (torch.rand(1, 1, 4, 4, 4),)),
    "cat of bf16 and fp32": (lambda x: torch.cat([x.bfloat16(), x]), (torch.rand(2, 8),)),
    "add of bf16 and fp32": (lambda x: x.bfloat16() + x, (torch.rand(2, 8),)),
    "conv2d in float64": (lambda x, w: F.conv2d(x, w), (torch.rand(2, 4, 8, 8).double(), _W.double())),
}


@pytest.mark.parametrize("name", OPS)
def test_each_op_runs_in_the_dtype_real_cpu_autocast_gives_it(name):
    op, args = OPS[name]
    with real_autocast("cpu"):
        real = op(*args)
    with Autocast("cpu"):
        emulated = op(*(a.to("meta") for a in args))
    assert emulated.is_meta and emulated.dtype == real.dtype and emulated.shape == real.shape


def check_saved(name: str, resolution: int) -> None:
    memory_tests.check_saved(name, resolution, amp=True)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "convnext_tiny", "efficientnet_b0", "regnet_y_400mf",
                                  "shufflenet_v2_x1_0"])
def test_saved_activations_equal_what_autograd_saves_under_real_cpu_autocast(name):
    check_saved(name, 64)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_saved_activations_under_autocast_for_every_zoo_model(name):
    check_saved(name, 64)


def measured(name: str, shape: tuple, mode: str) -> int:
    """Peak bytes of one real CPU inference pass (inference_mode) or training step (Adam) under CPU autocast, after
    a warm-up call, on top of what is resident (cnnprof.timing.peak)."""
    torch.manual_seed(0)
    net, x = build_model(name, "cpu").train(mode == "train"), torch.rand(shape)
    if mode == "train":
        opt = make_optimizer("adam", net.parameters())
        prime_optimizer(opt)
        call, resident = (lambda: train_step(net, opt, (x,), {}, real_autocast("cpu"))), resident_bytes(net, [x], opt)
    else:
        def call() -> None:
            with torch.inference_mode(), real_autocast("cpu"):
                net(x)
        resident = resident_bytes(net, [x])
    call()
    return peak_bytes(call, "cpu", resident)


@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_amp_peak_is_within_10_percent_of_the_cpu_allocator_peak(name, mode):
    shape = (4, 3, 64, 64)
    predicted = footprint(build_model(name, "meta"), shape, mode=mode, optimizer="adam", amp=True).peak
    real = measured(name, shape, mode)
    assert abs(predicted - real) <= 0.10 * real, (predicted, real)


def test_weights_gradients_and_optimizer_state_stay_float32_and_activations_shrink():
    meta = build_model("resnet18", "meta")
    full, mixed = ([footprint(meta, (b, 3, 64, 64), mode="train", optimizer="adam", amp=a) for b in (8, 16)]
                   for a in (False, True))
    assert (mixed[0].parameters, mixed[0].gradients, mixed[0].optimizer_state, mixed[0].inputs) == (
        full[0].parameters, full[0].gradients, full[0].optimizer_state, full[0].inputs)
    # per sample, about half the bytes are saved (max-pool indices stay int64, norm statistics float32); the
    # bfloat16 copies of the weights that convolutions save come on top, once
    assert mixed[1].saved - mixed[0].saved < 0.6 * (full[1].saved - full[0].saved)
    assert next(meta.parameters()).dtype == torch.float32


def test_a_weight_used_twice_is_cast_once_as_autocast_caches_it():
    lin = nn.Linear(8, 8, bias=False)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    real = memory_tests.real_saved_bytes(model, (2, 8), amp=True)
    fp = footprint(model.to("meta"), (2, 8), mode="train", amp=True)
    assert fp.saved == real
    # saved: the bfloat16 input of the first linear (the cast input), the weight's one bfloat16 copy, ReLU's
    # output (what the second linear saves), the loss's float32 log-softmax (cross_entropy runs in float32: its
    # input is cast up, 64 bytes) and nll_loss's int64 target and float32 total weight.
    assert fp.saved == 2 * 2 * 8 + 2 * 64 + 2 * 2 * 8 + 4 * 2 * 8 + 8 * 2 + 4


def test_api_and_json_name_the_autocast_dtype_and_the_default_output_does_not_change():
    e = cnnprof.memory("mobilenet_v2", (2, 3, 32, 32), mode="train", budget="1GiB", amp=True)
    plain = cnnprof.memory("mobilenet_v2", (2, 3, 32, 32), mode="train", budget="1GiB")
    assert e.amp == "bfloat16" and e.to_dict()["amp"] == "bfloat16" and "amp" not in plain.to_dict()
    assert "autocast to bfloat16" in str(e) and "autocast" not in str(plain)
    assert e.peak < plain.peak and e.max_batch > plain.max_batch


def test_amp_refuses_weights_that_are_not_float32():
    with pytest.raises(CnnprofError, match="`amp` keeps the weights in float32.*`dtype=float16`"):
        cnnprof.memory("resnet18", batch_size=1, amp=True, dtype="float16", budget="1GiB")


def test_cli_memory_amp(cli):
    row = cli.json("memory", "resnet18", "--mode", "train", "--amp", "--resolution", "64", "--budget", "1GiB")[0]
    assert row["amp"] == "bfloat16" and row["dtype"] == "float32"
    meta = build_model("resnet18", "meta")
    assert row["peak_bytes"] == footprint(meta, (1, 3, 64, 64), mode="train", amp=True).peak
    result = cli("memory", "resnet18", "--amp", "--dtype", "bfloat16")
    assert result.exit_code == 2 and "--amp keeps the weights in float32" in result.stderr
    assert "--dtype bfloat16" in result.stderr and "Traceback" not in result.stderr


# torch's CUDA autocast reference (docs "CUDA Ops that can autocast to float16 / to float32"): conv and matmul in
# float16; softmax and sum with dtype=float32; layer_norm, exp and the losses cast up to float32.
CUDA_OPS = {
    "conv2d": (lambda x, w: F.conv2d(x, w), (torch.rand(2, 4, 8, 8), _W), torch.float16),
    "linear": (lambda x, w: F.linear(x, w), (torch.rand(2, 8), _L), torch.float16),
    "softmax of fp16": (lambda x: F.softmax(x.half(), -1), (torch.rand(2, 8),), torch.float32),
    "sum of fp16": (lambda x: x.half().sum(), (torch.rand(2, 8),), torch.float32),
    "layer_norm of fp16": (lambda x: F.layer_norm(x.half(), (8,)), (torch.rand(2, 8),), torch.float32),
    "exp of fp16": (lambda x: torch.exp(x.half()), (torch.rand(2, 8),), torch.float32),
    "relu of fp16": (lambda x: F.relu(x.half()), (torch.rand(2, 8),), torch.float16),
}


@pytest.mark.parametrize("name", CUDA_OPS)
def test_cuda_policy_follows_torchs_cuda_autocast_lists(name):
    from conftest import HAS_CUDA

    op, args, expected = CUDA_OPS[name]
    if HAS_CUDA:
        with real_autocast("cuda"):
            expected = op(*(a.cuda() for a in args)).dtype
    with Autocast("cuda"):
        assert op(*(a.to("meta") for a in args)).dtype == expected


def test_cuda_amp_computes_in_float16_and_keeps_float32_weights():
    e = cnnprof.memory("resnet18", batch_size=2, mode="train", device="cuda", budget="8GiB", amp=True)
    assert e.amp == "float16" and e.footprint.parameters == 4 * sum(p.numel() for p in build_model(
        "resnet18", "meta").parameters())
