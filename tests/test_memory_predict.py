"""Predicted memory (cnnprof memory, cnnprof.memory, bench --mode train): saved activations against what autograd
saves on a real CPU run, the peak against the CPU allocator, the terms against hand-derived sizes, the largest
batch that fits, and the CLI's answers to bad input. (tests/test_memory.py is the ideal-cache traffic model.)"""
import contextlib
import os

import pytest
import torch
from torch import nn

import cnnprof
from cnnprof.counting.amp import real_autocast
from cnnprof.counting.footprint import (
    SavedTensors, _key, footprint, make_optimizer, prime_optimizer, training_loss)
from cnnprof.errors import CnnprofError
from cnnprof.inputs import InputSpec
from cnnprof.models.spec import build_model, resolve
from cnnprof.predict.memory import largest_batch, parse_bytes, predict_memory
from cnnprof.timing.peak import peak_bytes, resident_bytes
from cnnprof.timing.prepare import Plan, bind, prepare

from conftest import ZOO


def real_saved_bytes(model: nn.Module, shape: tuple, amp: bool = False) -> int:
    """Bytes of the distinct storages autograd saves during one real CPU forward pass and loss (train mode; with
    `amp` under CPU autocast, whose bfloat16 weight copies count: they are not parameters), parameters, buffers
    and the input left out, as the allocator holds them."""
    x = torch.rand(shape)
    saved = SavedTensors({_key(t) for t in (*model.parameters(), *model.buffers(), x)})
    with saved.hooks(), real_autocast("cpu") if amp else contextlib.nullcontext():
        training_loss(model(x))
    return saved.total


def check_saved(name: str, resolution: int, amp: bool = False) -> None:
    """At batch 1 and 8, one real model built for both."""
    torch.manual_seed(0)
    real, meta = build_model(name, "cpu").train(), build_model(name, "meta")
    for batch in (1, 8):
        shape = (batch, 3, resolution, resolution)
        predicted = footprint(meta, shape, mode="train", amp=amp).saved
        assert predicted > 0 and predicted == real_saved_bytes(real, shape, amp), batch


@pytest.mark.parametrize("name", ZOO)
def test_saved_activations_equal_what_autograd_saves_on_a_real_run(name):
    check_saved(name, 64)


# At 224 px the real training runs of the whole zoo at batch 8 hold many GB (vgg16, resnext101): an optional
# group, out of `make test` (CI machines have 2 cores and little memory); CNNPROF_TEST_FULL_SIZE=1 runs it.
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CNNPROF_TEST_FULL_SIZE"), reason="whole zoo at 224 px needs many GB: "
                    "set CNNPROF_TEST_FULL_SIZE=1")
@pytest.mark.parametrize("name", ZOO)
def test_saved_activations_equal_what_autograd_saves_at_224(name):
    check_saved(name, 224)


def measured(name: str, shape: tuple, mode: str, optimizer: str = "adam") -> int:
    """Peak bytes of one real CPU call after a warm-up call, as bench measures it."""
    plan = Plan(mode=mode, optimizer=optimizer)
    specs = (InputSpec(shape),)
    bound = bind(prepare(resolve(name), "cpu", "float32", False, False, train=mode == "train"), specs, plan)
    with torch.inference_mode(mode == "infer"):
        bound.call()
        return peak_bytes(bound.call, "cpu", bound.resident)


@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_predicted_peak_is_within_10_percent_of_the_cpu_allocator_peak(name, mode):
    shape = (4, 3, 64, 64)
    predicted = footprint(build_model(name, "meta"), shape, mode=mode, optimizer="adam").peak
    real = measured(name, shape, mode)
    assert abs(predicted - real) <= 0.10 * real, (predicted, real)


def test_terms_are_the_hand_derived_sizes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 30 * 30, 10)).to("meta")
    n_params = 3 * 8 * 9 + 8 + 8 + 8 * 30 * 30 * 10 + 10
    tensors = len(list(model.parameters()))
    fp = {opt: footprint(model, (2, 3, 32, 32), mode="train", optimizer=opt) for opt in ("sgd", "momentum", "adam")}
    assert fp["sgd"].parameters == fp["sgd"].gradients == 4 * n_params
    assert fp["sgd"].buffers == 4 * 8 * 2 + 8  # running mean and var (float32), num_batches_tracked (int64)
    assert fp["sgd"].inputs == 4 * 2 * 3 * 32 * 32
    assert fp["sgd"].optimizer_state == 0 and fp["momentum"].optimizer_state == 4 * n_params
    assert fp["adam"].optimizer_state == 2 * 4 * n_params + 4 * tensors  # two moments and a float32 step each
    # Saved: the conv output (BatchNorm's input), BatchNorm's mean and invstd, ReLU's output (Flatten's view of
    # it is what Linear saves), the logits' log-softmax, the int64 target and nll_loss's float32 total weight.
    act = 4 * 2 * 8 * 30 * 30
    assert fp["sgd"].saved == act + 2 * 4 * 8 + act + 4 * 2 * 10 + 8 * 2 + 4
    infer = footprint(model, (2, 3, 32, 32))
    assert infer.saved == infer.gradients == infer.optimizer_state == 0 and infer.peak < fp["sgd"].peak


def test_half_precision_halves_parameters_and_activations():
    meta = build_model("resnet18", "meta")
    full, half = footprint(meta, (2, 3, 64, 64), mode="train"), footprint(meta, (2, 3, 64, 64), "float16", "train")
    assert half.parameters * 2 == full.parameters and half.inputs * 2 == full.inputs
    assert half.saved < 0.6 * full.saved  # max-pool indices stay int64
    assert next(meta.parameters()).dtype == torch.float32  # the caller's model is not converted


def test_the_optimizer_step_is_in_the_peak_when_activations_are_small():
    meta = build_model("resnet18", "meta")
    sgd, adam = (footprint(meta, (1, 3, 64, 64), mode="train", optimizer=o) for o in ("sgd", "adam"))
    params = sgd.parameters
    assert adam.peak - sgd.peak >= adam.optimizer_state  # the moments, and the step's temporaries on top
    assert sgd.peak >= sgd.resident + params  # every gradient is live when the optimizer steps


def test_saved_by_layer_adds_up_and_names_the_layers():
    e = cnnprof.memory("resnet18", batch_size=2, mode="train", budget="1GiB")
    by_layer = e.to_dict()["saved_by_layer"]
    assert sum(r["bytes"] for r in by_layer) == e.footprint.saved
    layers = {r["layer"] for r in by_layer} - {"(model)"}  # the loss runs outside every module
    assert "stem.0.norm" in layers and all(layer in dict(build_model("resnet18", "meta").named_modules())
                                           for layer in layers)


def test_largest_batch_solves_the_line_and_checks_it():
    calls = []

    def peak(b):
        calls.append(b)
        return 1000 + 37 * b

    assert largest_batch(peak, 10_000, {}, 10**9) == (10_000 - 1000) // 37
    assert len(calls) <= 4
    assert largest_batch(peak, 999, {}, 10**9) == 0
    assert largest_batch(peak, 10**12, {}, 500) == 500
    step = lambda b: 100 * ((b + 7) // 8)  # noqa: E731 - grows in steps of 8, not on a line
    best = largest_batch(step, 1000, {64: step(64)}, 10**6)
    assert step(best) <= 1000 < step(best + 1)


def test_largest_batch_of_a_model_fits_and_one_more_does_not():
    e = cnnprof.memory("mobilenet_v2", (16, 3, 32, 32), mode="train", optimizer="adam", budget="200MiB")
    meta = build_model("mobilenet_v2", "meta")
    at = lambda b: footprint(meta, (b, 3, 32, 32), mode="train", optimizer="adam").peak  # noqa: E731
    assert e.fits is (e.peak <= 200 * 2**20) and e.max_batch > 0
    assert at(e.max_batch) <= 200 * 2**20 < at(e.max_batch + 1)


def test_parse_bytes():
    assert parse_bytes("24GiB") == 24 * 2**30 and parse_bytes("512 MiB") == 512 * 2**20
    assert parse_bytes("8GB") == 8 * 10**9 and parse_bytes("1.5G") == 3 * 2**29 and parse_bytes(4096) == 4096
    for bad in ("lots", "-1GiB", "0", "24 GiBs", ""):
        with pytest.raises(CnnprofError, match="`budget="):
            parse_bytes(bad)


def test_api_result_prints_serialises_and_leaves_a_users_module_where_it_is():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    e = cnnprof.memory(model, (2, 3, 16, 16), mode="train", budget=2**20)
    assert isinstance(e, cnnprof.MemoryEstimate) and next(model.parameters()).device.type == "cpu"
    row = e.to_dict()
    assert row["mode"] == "train" and row["peak_bytes"] == e.peak and row["budget_bytes"] == 2**20
    assert row["saved_activations_bytes"] == 4 * 2 * 4 * 14 * 14  # ReLU's output; conv's input is the input
    assert "Memory, predicted" in str(e) and "saved for backward" in str(e)


def test_predict_memory_refuses_unknown_mode_and_optimizer():
    specs = (InputSpec((1, 3, 32, 32)),)
    with pytest.raises(CnnprofError, match="`mode=fit`"):
        predict_memory(resolve("resnet18"), specs, mode="fit")
    with pytest.raises(CnnprofError, match="`optimizer=lbfgs`"):
        predict_memory(resolve("resnet18"), specs, mode="train", optimizer="lbfgs")


def test_cli_memory_says_whether_it_fits_and_the_largest_batch(cli):
    row = cli.json("memory", "resnet50", "--mode", "train", "--batch-size", "256", "--optimizer", "adam",
                   "--budget", "24GiB")[0]
    assert row["batch_size"] == 256 and row["budget_bytes"] == 24 * 2**30
    assert row["fits"] is (row["peak_bytes"] <= 24 * 2**30) and row["max_batch_size"] >= 256
    meta = build_model("resnet50", "meta")
    at = lambda b: footprint(meta, (b, 3, 224, 224), mode="train", optimizer="adam").peak  # noqa: E731
    assert at(row["max_batch_size"]) <= 24 * 2**30 < at(row["max_batch_size"] + 1)
    text = cli("memory", "resnet50", "--mode", "train", "--batch-size", "256", "--optimizer", "adam",
               "--budget", "24GiB").stdout
    assert "fits in 24.00 GiB" in text and f"the largest batch that fits is {row['max_batch_size']:,}" in text


def test_cli_memory_sweeps_batch_sizes_and_defaults_to_free_memory(cli):
    rows = cli.json("memory", "resnet18", "--batch-size", "1,4", "--resolution", "64")
    assert [r["batch_size"] for r in rows] == [1, 4] and rows[0]["peak_bytes"] < rows[1]["peak_bytes"]
    assert all(r["mode"] == "infer" and r["saved_activations_bytes"] == 0 for r in rows)
    assert rows[0]["budget_source"] == "free memory" and rows[0]["budget_bytes"] > 0
    assert rows[1]["budget_bytes"] == rows[0]["budget_bytes"]  # read once per run: one budget for every row


@pytest.mark.parametrize("args, message", [
    (["--budget", "lots"], "--budget lots: expected a size"),
    (["--budget", "0GiB"], "--budget 0GiB: expected a size above 0"),
    (["--mode", "fit"], "'fit' is not one of"),
    (["--optimizer", "lbfgs"], "'lbfgs' is not one of"),
])
def test_cli_memory_bad_input_is_one_line_and_exit_2(cli, args, message):
    result = cli("memory", "resnet18", *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_bench_train_times_steps_and_records_the_peak_next_to_the_prediction(cli):
    row = cli.json("bench", "resnet18", "--mode", "train", "--optimizer", "momentum", "--resolution", "64",
                   "--batch-size", "2", "--warmup", "0", "--min-time", "0.05", "--threads", "1")[0]
    assert row["status"] == "ok" and row["mode"] == "train" and row["optimizer"] == "momentum" and row["runs"] > 0
    peak = row["peak_bytes"]
    assert abs(peak["predicted"] - peak["measured"]) <= 0.10 * peak["measured"], peak


def test_bench_refuses_a_breakdown_of_training_steps(cli):
    result = cli("bench", "resnet18", "--mode", "train", "--breakdown")
    assert result.exit_code == 2 and "--breakdown times the ops of a forward pass" in result.stderr


def test_a_training_step_trains():
    """The step that is simulated and measured is a real training step: the loss goes down."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    opt = make_optimizer("adam", model.parameters())
    prime_optimizer(opt)
    x = torch.rand(4, 3, 2, 2)
    from cnnprof.counting.footprint import train_step

    before = training_loss(model(x)).item()
    for _ in range(20):
        train_step(model, opt, (x,), {})
    assert training_loss(model(x)).item() < before and all(p.grad is None for p in model.parameters())
    assert resident_bytes(model, [x], opt) == 4 * (39 * 3 + 2 + 48)  # params, two moments, two steps, the input


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw"])
def test_the_optimizer_table_is_what_torch_optim_allocates(optimizer, foreach, dtype):
    from cnnprof.counting.footprint import per_element, simulated_per_element

    assert per_element(optimizer, foreach, dtype) == simulated_per_element(optimizer, foreach, dtype)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_small", "convnext_tiny", "shufflenet_v2_x1_0", "vgg16"])
def test_shape_only_fast_paths_change_no_byte(name):
    from cnnprof.counting.liveness import FAST

    meta = build_model(name, "meta")
    fast = [footprint(meta, (2, 3, 64, 64), mode=m, optimizer="adam") for m in ("infer", "train")]
    FAST[0] = False
    try:
        assert fast == [footprint(meta, (2, 3, 64, 64), mode=m, optimizer="adam") for m in ("infer", "train")]
    finally:
        FAST[0] = True


def test_predicting_for_cuda_needs_a_budget_where_there_is_no_cuda():
    from conftest import HAS_CUDA

    if HAS_CUDA:
        pytest.skip("a CUDA device is present: its free memory is the budget")
    with pytest.raises(CnnprofError, match="CUDA is not available"):
        cnnprof.memory("resnet18", device="cuda")
    cpu, cuda = (cnnprof.memory("resnet18", batch_size=2, mode="train", optimizer="adam", device=d, budget="8GiB")
                 for d in ("cpu", "cuda"))
    # on CUDA: no oneDNN workspace, and Adam's multi-tensor step holds one temporary per parameter element
    assert cuda.footprint.saved == cpu.footprint.saved and cuda.peak != cpu.peak
