"""The GPU latency model on datasheet GPUs (cnnprof.predict.gpu): hand-derived wave quantisation, tile choice,
launch floor, op features, the gpus.yaml schema, and a fixed-efficiency golden prediction. CPU only."""
import copy
import json

import pytest
from torch import nn

from cnnprof.errors import CnnprofError
from cnnprof.predict import gpu
from cnnprof.predict.device import datasheet
from cnnprof.predict.latency import predict_latency
from cnnprof.predict.profile_file import ProfileError

# Fixed efficiencies (not the fitted ones, which change when refitted): every time below is derived by hand.
FIXED = gpu.Efficiency(gemm=0.5, k_fixed=24.0, simt=0.25, launch_s=2e-6, fitted_on="test",
                       bandwidth={"gemm": 0.8, "depthwise": 0.4, "norm": 0.7, "streaming": 0.5, "pooling": 0.6,
                                  "reduction": 0.9})
TOY = gpu.GpuSpec(key="toy", name="toy GPU", sms=4, peak={"float32": 1e12, "float16": 1e12}, bandwidth=1e12,
                  sources=("test",))


def _gemm(m, n, k, batch=1):
    return gpu.OpFeatures("gemm", 2 * batch * m * n * k, 0, batch, m, n, k)


def test_wave_quantisation_one_row_more_costs_a_whole_wave():
    # 256 x 256 on 4 SMs: four 128 x 128 tiles, one wave; the cheapest tiling (128x64 needs 2 waves at 2/3 rate).
    full = _gemm(256, 256, 1000)
    assert gpu.gemm_waves(full, 4, (128, 128)) == (4, 1)
    assert gpu.gemm_cost(full, 4) == (1 * 4 * 2 * 128 * 128, (128, 128))
    # One wave of 4 SMs x 2 * 128 * 128 * (K + k_fixed) FLOPs at 0.5 x 1 TFLOP/s.
    assert gpu.gemm_compute_s(full, TOY, FIXED, "float16") == pytest.approx(4 * 2 * 128 * 128 * 1024 / 0.5e12)
    # 257 rows: 6 tiles of 128 x 128 -> 2 waves (128x64: 12 tiles, 3 waves at 2/3; 64x64: 20 tiles, 5 waves at 1/2).
    over = _gemm(257, 256, 1000)
    assert gpu.gemm_waves(over, 4, (128, 128)) == (6, 2)
    assert gpu.gemm_cost(over, 4)[1] == (128, 128)
    assert gpu.gemm_compute_s(over, TOY, FIXED, "float16") == pytest.approx(
        2 * gpu.gemm_compute_s(full, TOY, FIXED, "float16"))


def test_a_small_gemm_takes_small_tiles():
    # M = 1024, N = 64 on 132 SMs: 32 x 32 tiles (64 of them, one wave, a quarter of the full-tile rate) beat
    # 128 x 128 (8 tiles, one wave, half of each tile padding): 132 * 2 * 1024 / 0.25 < 132 * 2 * 16384.
    f = _gemm(1024, 64, 27)
    assert gpu.tile_rate((32, 32)) == 0.25 and gpu.tile_rate((64, 64)) == 0.5 and gpu.tile_rate((128, 128)) == 1
    assert gpu.gemm_cost(f, 132) == (132 * 2 * 1024 / 0.25, (32, 32))


def test_launch_overhead_is_the_floor_of_every_op():
    nothing = gpu.OpFeatures("streaming", 0, 0)
    assert gpu.op_time(nothing, TOY, FIXED, "float16") == FIXED.launch_s
    tiny = gpu.OpFeatures("streaming", 1, 4)
    assert gpu.op_time(tiny, TOY, FIXED, "float16") == pytest.approx(2e-6 + max(1 / 0.25e12, 4 / 0.5e12))
    big = gpu.OpFeatures("norm", 1e6, 7e9)  # memory-bound: 7e9 B at 0.7 x 1 TB/s = 10 ms
    assert gpu.op_time(big, TOY, FIXED, "float16") == pytest.approx(2e-6 + 10e-3)
    assert gpu.model_time([(nothing, 3), (big, 2)], TOY, FIXED, "float16") == pytest.approx(3 * 2e-6 + 2 * 10.002e-3)


def test_features_of_conv_grouped_conv_linear_and_bmm():
    from cnnprof.counting.traffic import analyze_memory

    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 32, 1, groups=4), nn.Conv2d(32, 32, 3, groups=32),
                        nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
    calls = analyze_memory(net, (2, 8, 6, 6), "float16").calls
    conv, grouped, depthwise, linear = (gpu.features(c) for c in calls)
    assert (conv.kind, conv.batch, conv.m, conv.n, conv.k) == ("gemm", 1, 2 * 36, 16, 8 * 9)
    assert (grouped.kind, grouped.batch, grouped.m, grouped.n, grouped.k) == ("gemm", 4, 2 * 36, 8, 4)
    assert depthwise.kind == "depthwise" and depthwise.batch == 0
    assert (linear.kind, linear.batch, linear.m, linear.n, linear.k) == ("gemm", 1, 2, 10, 512)
    assert conv.bytes == 2 * (2 * 8 * 36 + 16 * 8 * 9 + 16 + 2 * 16 * 36)  # float16: input, weight, bias, output


def test_packaged_datasheet_lists_the_gpus_with_sources():
    specs, eff = gpu.load()
    assert {"rtx3090", "rtx4090", "rtx5090", "a100", "h100", "h200", "l4", "t4"} <= set(specs)
    assert all(s.sources and s.sms > 0 and s.peak["float32"] < s.peak_at("float16") for s in specs.values())
    assert set(eff.bandwidth) == set(gpu.KINDS) and eff.fitted_on
    assert datasheet("RTX-3090").name == specs["rtx3090"].name  # a datasheet name resolves to the entry


def _raw():
    from cnnprof.models.yaml_input import read_yaml

    return read_yaml(gpu.DATA_FILE)


@pytest.mark.parametrize("path, value, message", [
    (("gpus", "h100", "sources"), [], "sources: expected a non-empty list"),
    (("gpus", "h100", "bandwidth"), -1.0, "bandwidth: expected a number"),
    (("gpus", "h100", "sms"), 0, "sms: expected an SM count"),
    (("gpus", "h100", "peak"), {"float16": 1e12}, "peak: expected FLOP/s per dtype"),
    (("gpus", "h100", "peak"), {"float32": 1e12, "int8": 1e12}, "peak: expected FLOP/s per dtype"),
    (("efficiency", "gemm"), 1.5, "efficiency.gemm: expected a number in (0, 1]"),
    (("efficiency", "launch_s"), "5us", "efficiency.launch_s: expected a number"),
    (("efficiency", "bandwidth"), {"gemm": 0.5}, "efficiency.bandwidth: expected a fraction for each of"),
    (("gpus",), {}, "gpus: expected at least one GPU"),
])
def test_datasheet_schema_rejects_bad_entries(path, value, message):
    data = copy.deepcopy(_raw())
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        gpu.parse(data, "gpus.yaml")
    assert issubclass(ProfileError, CnnprofError)  # one line, exit 2 at the CLI


def test_fixed_efficiency_golden_prediction_of_a_conv_and_relu_on_h100():
    # Conv 3 -> 64, 3x3, on 1 x 3 x 32 x 32 in float16: GEMM M = 1024, N = 64, K = 27, best tile 32 x 32
    # (64 tiles, one wave of 132 SMs at rate 1/4); bytes = 2 * (3072 input + 1728 weight + 64 bias + 65536 output).
    net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU())
    h100 = datasheet("h100")
    pred = gpu.with_efficiency(predict_latency(net, (1, 3, 32, 32), h100, "float16"), h100, FIXED)
    conv_s = 2e-6 + max(132 * 2 * 1024 / 0.25 * (27 + 24) / (989e12 * 0.5), 2 * 70400 / (3.35e12 * 0.8))
    relu_s = 2e-6 + max(65536 / (67e12 * 0.25), 2 * 2 * 65536 / (3.35e12 * 0.5))
    assert [p.calibrated_s for p in pred.ops] == pytest.approx([conv_s, relu_s])
    assert pred.calibrated_s == pytest.approx(conv_s + relu_s)
    # the golden number: conv 2 + 0.1115 (compute) us, ReLU 2 + 0.1565 (memory) us
    assert pred.calibrated_s == pytest.approx(4.2680e-6, rel=1e-4)
    assert pred.latency_model == "GPU efficiency model (test)"


def test_measured_and_non_gpu_profiles_are_left_alone():
    from dataclasses import replace

    h100 = datasheet("h100")
    file_profile = replace(h100, source="file", name="my GPU")
    pred = predict_latency(nn.Sequential(nn.ReLU()), (1, 8), file_profile)
    assert pred.calibrated_s is None and pred.latency_model == ""


def test_compare_predict_on_a_datasheet_gpu_says_which_model_priced_it(cli):
    out = cli("compare", "resnet18", "mobilenet_v2", "--predict", "--device-spec", "rtx3090", "--batch-size", "64",
              "--format", "json")
    rows = json.loads(out.stdout)
    assert all(r["prediction"].startswith("GPU efficiency model (timm RTX 3090") for r in rows)
    assert all(r["profile"] == "datasheet" and r["predicted_ms"] != r["roofline_ms"] for r in rows)
    table = cli("compare", "resnet18", "resnet34", "--predict", "--device-spec", "h100").stdout
    assert "Predicted: GPU efficiency model" in table and "NVIDIA H100 SXM (datasheet)" in table


class _Sdpa(nn.Module):
    def forward(self, x):
        return nn.functional.scaled_dot_product_attention(x, x, x)


class _Explicit(nn.Module):
    def forward(self, x):
        return (x @ x.transpose(-2, -1)).softmax(-1) @ x


def test_scaled_dot_product_attention_is_one_fused_kernel():
    from cnnprof.counting.traffic import analyze_memory

    # q = k = v: 2 x 4 heads x 16 tokens x 8 channels. Fused: 8 GEMMs of M = 16 queries, N = 8 channels,
    # K = (2 bmm x 8 * 16 * 16 * 8 MACs) / (8 * 16 * 8) = 32; bytes = q, k, v read + output written, float16.
    calls = analyze_memory(_Sdpa(), (2, 4, 16, 8), "float16").calls
    feats = gpu.op_features(calls)
    kept = [f for f in feats if f is not None]
    assert kept == [gpu.OpFeatures("gemm", 2 * 2 * 8 * 16 * 16 * 8, 2 * 4 * 1024, 8, 16, 8, 32)]
    assert feats[-1] == kept[0] and len(calls) > 3  # the scaling, copies, first bmm and softmax fold into it
    explicit = gpu.op_features(analyze_memory(_Explicit(), (2, 4, 16, 8), "float16").calls)
    assert None not in explicit and [f.kind for f in explicit] == ["gemm", "streaming", "gemm"]
