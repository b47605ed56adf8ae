"""Layers timed in their network's order (cnnprof.predict.sequence): the recorded plan's data flow, the replay
on real tensors, and the layer table filled from it. Deterministic: the timed test uses a fake clock."""
import dataclasses

import pytest
import torch
from torch import nn

from cnnprof.predict import lut, sequence
from cnnprof.predict.sequence import Written


class Residual(nn.Module):
    """conv -> in-place ReLU -> a channel split whose halves are added to the input's halves."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.act(self.conv(x))
        a, b = y.chunk(2, dim=1)
        return torch.cat([a + x[:, :2], b * 2], dim=1)


def plan_of(model, shape=(1, 4, 3, 3)):
    return lut._record(model, (shape,), "float32")


def test_an_argument_an_earlier_call_wrote_is_replayed_as_that_output_and_the_rest_are_made_once():
    rec = plan_of(Residual())
    steps = rec.plan.steps
    assert [s.key.split("|")[0] for s in steps] == [rec.layers[k].call.op for k in rec.order]
    conv, relu = steps[0], steps[1]
    assert not any(isinstance(a, Written) for a in conv.args)  # input, weight and bias: made once
    (x,) = [a for a in relu.args if isinstance(a, Written)]
    assert x.storage == conv.outputs[0][1] and x.shape == (1, 4, 3, 3)
    halves = [a for s in steps[2:] for a in s.args if isinstance(a, Written)]
    assert {h.offset for h in halves} == {0, 18}  # the second half of the split: a view 2 channels in
    assert rec.plan.fresh_bytes >= 4 * (4 * 4 + 4 + 36)  # weight, bias and input at 4 bytes


def test_outputs_are_dropped_after_their_last_reader_and_the_peak_counts_what_is_alive():
    rec = plan_of(Residual())
    plan = rec.plan
    conv_out = plan.steps[0].outputs[0][1]
    last_reader = max(i for i, s in enumerate(plan.steps)
                      for a in [*s.args, *(x for v in s.args if isinstance(v, list) for x in v)]
                      if isinstance(a, Written) and a.storage == conv_out)
    assert conv_out in plan.frees[last_reader]
    freed = [sid for sids in plan.frees.values() for sid in sids]
    assert len(freed) == len(set(freed)) == len({sid for s in plan.steps for _, sid, _ in s.outputs})
    assert 36 * 4 <= plan.peak_live_bytes <= sum(36 * 4 for _ in plan.steps)
    assert plan.bytes == plan.fresh_bytes + plan.peak_live_bytes


def test_the_replay_feeds_each_call_the_real_output_it_read_in_the_network():
    rec = plan_of(Residual())
    seen = []

    def spy(func):
        def call(*args, **kwargs):
            out = func(*args, **kwargs)
            seen.append((func, args, out))
            return out
        return call

    rec.plan.steps = [dataclasses.replace(s, func=spy(s.func)) for s in rec.plan.steps]
    replay = sequence.Replay(rec.plan, "cpu", torch.float32)
    with torch.inference_mode():
        times = replay.round(iter(range(100)).__next__)
    assert times == [1] * len(rec.plan.steps)  # one clock read before and after every call
    conv_out = seen[0][2]
    relu_in = seen[1][1][0]
    assert relu_in.data_ptr() == conv_out.data_ptr() and relu_in.shape == conv_out.shape
    consumers = [a for _, args, _ in seen[2:] for a in args if isinstance(a, torch.Tensor)]
    assert any(a.data_ptr() == conv_out.data_ptr() + 18 * 4 for a in consumers)  # the split's second half
    assert replay.round() == []  # untimed


def test_a_view_that_does_not_fit_the_replayed_output_is_made_fresh():
    base = torch.zeros(6)
    live = {7: (base, 0)}
    inside = sequence._view(Written(7, (2,), (1,), 4, None), live)
    assert inside.data_ptr() == base.data_ptr() + 16
    outside = sequence._view(Written(7, (4,), (1,), 4, None), live)
    assert outside.shape == (4,) and outside.data_ptr() != base.data_ptr()


def test_time_in_order_takes_the_mean_of_the_asked_keys_over_timed_rounds_after_the_warmup(monkeypatch):
    rec = plan_of(Residual())
    ticks = iter(range(0, 10**6, 1))
    keys = {rec.order[0], rec.order[-1]}
    got = sequence.time_in_order(rec.plan, "cpu", torch.float32, keys, min_time=0.0, clock=lambda: next(ticks))
    assert set(got) == keys and all(v == 1 for v in got.values())
    rounds = next(ticks) // (2 * len(rec.plan.steps))  # two clock reads per timed call, none in the warm-up
    assert rounds == sequence.MIN_ROUNDS


def test_fill_in_order_times_the_missing_layers_in_the_network_and_alone_when_the_replay_is_too_big(monkeypatch):
    rec = plan_of(Residual())
    table = lut.LayerTable("cpu", "float32", 1)
    table.times[rec.order[0]] = 1.0  # already measured: kept
    asked = []
    monkeypatch.setattr(lut, "measure_in_order",
                        lambda r, d, dt, keys, *a: asked.append(keys) or {k: 2e-6 for k in keys})
    monkeypatch.setattr(lut, "measure_layer", lambda layer, *a, **k: 3e-6)
    assert lut.fill_in_order(table, rec) == len(rec.layers) - 1
    assert asked == [set(rec.layers) - {rec.order[0]}] and table.times[rec.order[0]] == 1.0
    assert set(table.times.values()) == {1.0, 2e-6}
    assert lut.fill_in_order(table, rec) == 0 and len(asked) == 1  # nothing missing: no replay
    monkeypatch.setattr(sequence, "MAX_BYTES", 0)
    alone = lut.LayerTable("cpu", "float32", 1)
    assert lut.fill_in_order(alone, rec) == len(rec.layers) and set(alone.times.values()) == {3e-6}
    cuda = lut.LayerTable("cuda", "float32", 1)
    monkeypatch.setattr(sequence, "MAX_BYTES", 1 << 40)
    assert lut.fill_in_order(cuda, rec) == len(rec.layers) and len(asked) == 1  # CUDA: each alone


def test_a_replay_that_fails_falls_back_to_each_layer_alone(monkeypatch):
    rec = plan_of(Residual())

    def broken(*_a, **_k):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(lut, "measure_in_order", broken)
    monkeypatch.setattr(lut, "measure_layer", lambda layer, *a, **k: 3e-6)
    table = lut.LayerTable("cpu", "float32", 1)
    assert lut.fill_in_order(table, rec) == len(rec.layers)


def test_a_real_replay_times_every_layer_of_a_network_once_per_key():
    rec = plan_of(lut.tiny_network(3, 4), (1, 4, 4, 4))
    got = sequence.time_in_order(rec.plan, "cpu", torch.float32, set(rec.layers), 0.0,
                                 clock=__import__("time").perf_counter)
    assert set(got) == set(rec.layers) and all(0 < t < 1 for t in got.values())


@pytest.mark.parametrize("inplace", [False, True])
def test_the_replay_runs_in_place_ops_on_the_outputs_they_change(inplace):
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(inplace=inplace), nn.Conv2d(2, 2, 1))
    rec = plan_of(model, (1, 2, 2, 2))
    relu_out = rec.plan.steps[1].outputs[0][1]
    (read,) = [a for a in rec.plan.steps[2].args if isinstance(a, Written)]
    assert read.storage == relu_out
    assert (relu_out == rec.plan.steps[0].outputs[0][1]) is inplace


def test_a_layer_time_is_its_mean_over_the_typical_rounds_slow_calls_within_them_kept():
    rec = plan_of(Residual())
    n = len(rec.plan.steps)
    quiet = [1.0] * n
    skewed = [1.0] * (n - 1) + [5.0]  # the last call waits once in a while, inside ordinary rounds
    busy = [50.0] * n  # a round the machine spent elsewhere
    rounds = [quiet, skewed, quiet, busy, skewed, quiet, skewed, [0.1] * n]
    typical = sequence.typical_rounds(rounds)
    assert len(typical) == 4 and busy not in typical and [0.1] * n not in typical and skewed in typical
    last = rec.plan.steps[-1].key
    got = sequence.mean_per_key(rec.plan, {last}, typical)
    assert set(got) == {last} and got[last] == pytest.approx((2 * 5.0 + 2 * 1.0) / 4)
    assert sequence.typical_rounds(rounds[:3]) == rounds[:3]  # too few to leave any out


class Plain(nn.Module):
    """conv -> batch norm -> ReLU -> linear, as a fresh network of torch's layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_made_once_tensors_hold_what_a_fresh_network_holds():
    rec = plan_of(Plain(), (1, 3, 6, 6))
    by_op = {str(s.func).split(".")[1]: s for s in rec.plan.steps}
    conv = by_op["convolution"]
    assert conv.args[0].init == ("normal", 1.0)  # the input
    assert conv.args[1].init == ("normal", pytest.approx((2 / 27) ** 0.5))  # He-normal for a fan-in of 3 * 3 * 3
    bn = [a for a in by_op["native_batch_norm"].args if isinstance(a, sequence.TensorSpec)]
    assert [a.init[0] for a in bn] == ["ones", "zeros", "zeros", "ones"]  # weight, bias, running mean and var
    linear = [a for a in by_op["addmm"].args if isinstance(a, sequence.TensorSpec)]
    assert [a.init for a in linear] == [("ones", 0.0), ("normal", pytest.approx((2 / 128) ** 0.5))]
    layer = rec.layers[conv.key]
    assert layer.args[1] == conv.args[1]  # a layer timed alone is made the same way
    made = sequence.make_tensors(bn, "cpu", torch.float32)
    assert [float(t.mean()) for t in made] == [1.0, 0.0, 0.0, 1.0]


def test_a_deep_replay_keeps_its_activations_finite_and_of_both_signs():
    deep = nn.Sequential(*[m for _ in range(40) for m in (nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())],
                         nn.Conv2d(8, 8, 1))
    rec = plan_of(deep, (1, 8, 8, 8))
    outs = []
    last = rec.plan.steps[-1]
    rec.plan.steps[-1] = dataclasses.replace(last, func=lambda *a, **k: outs.append(last.func(*a, **k)) or outs[-1])
    with torch.inference_mode():
        sequence.Replay(rec.plan, "cpu", torch.float32).round()
    (out,) = outs
    assert bool(torch.isfinite(out).all()) and 1e-3 < float(out.std()) < 1e3  # uniform [0, 1) weights: inf
    assert float((out > 0).float().mean()) < 0.9 and float((out < 0).float().mean()) > 0.1
