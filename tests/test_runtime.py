"""Benchmark protocol: statistics from raw samples, throughput, breakdown shares, OOM rows, device errors.
No timed assertions: only consistency between the numbers a run reports."""
import json
import statistics

import pytest
import torch
from torch import nn

import cnnprof
from cnnprof.analysis.runtime import BenchResult, Environment, benchmark
from tests.conftest import cuda

ENV = Environment("x", "cpu", "cpu", 1, "float32", False, False, False)
FAST = dict(warmup=0.0, min_time=0.05, min_runs=5)


def test_statistics_are_derived_from_the_raw_samples():
    times = (0.010, 0.012, 0.011, 0.030, 0.013, 0.009, 0.011, 0.012)
    r = BenchResult("m", "cpu", 4, (4, 3, 8, 8), "float32", ENV, times_s=times, macs=10**9)
    xs = sorted(times)
    assert r.runs == 8
    assert r.median_s == pytest.approx(statistics.median(times))
    assert r.mean_s == pytest.approx(statistics.fmean(times))
    assert r.min_s == min(times)
    q = statistics.quantiles(times, n=4, method="inclusive")
    assert r.iqr_s == pytest.approx(q[2] - q[0])
    assert r.quantile(0.9) == pytest.approx(xs[6] + 0.3 * (xs[7] - xs[6]))
    assert r.quantile(0.99) <= max(times) and r.quantile(0.0) == min(times)
    assert r.throughput == pytest.approx(4 / r.median_s)
    assert r.gflops("nvidia") == pytest.approx(2 * r.gflops("macc")) == pytest.approx(2 / r.median_s)
    assert r.noisy == (r.iqr_s > 0.1 * r.median_s)
    assert r.latency_ms()["median"] == pytest.approx(1e3 * r.median_s)


def test_empty_result_has_no_statistics():
    r = BenchResult("m", "cpu", 1, (1, 3, 8, 8), "float32", ENV, status="oom")
    assert r.median_ms is None and r.throughput is None and r.gflops() is None and not r.noisy


def test_real_cpu_run_is_self_consistent():
    results = benchmark("resnet18", (1, 3, 64, 64), batch_sizes=[1, 2], threads=1, **FAST)
    assert [r.batch_size for r in results] == [1, 2]
    for r in results:
        assert r.status == "ok" and r.runs >= 5
        assert r.min_s <= r.median_s <= r.quantile(0.9) <= r.quantile(0.99) <= max(r.times_s)
        assert r.throughput == pytest.approx(r.batch_size / r.median_s)
        assert r.macs == cnnprof.count_flops("resnet18", (r.batch_size, 3, 64, 64)).macs
        assert r.cold_s > 0 and r.warmup_runs >= 1 and r.compile_s is None
        assert r.env.threads == 1 and r.env.device == "cpu" and r.env.torch_version == torch.__version__
    assert results[1].macs == 2 * results[0].macs


def test_api_returns_single_result_with_median_ms():
    r = cnnprof.benchmark("mobilenet_v3_small", (1, 3, 64, 64), **FAST)
    assert r.median_ms == pytest.approx(1e3 * r.median_s) and r.median_ms > 0


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_dtype_and_channels_last(dtype):
    r = benchmark("resnet18", (1, 3, 32, 32), dtype=dtype, channels_last=True, **FAST)
    assert r.status == "ok" and r.dtype == dtype and r.env.channels_last


def test_breakdown_shares_sum_to_one_and_macs_match_the_counter():
    r = benchmark("mobilenet_v2", (1, 3, 64, 64), breakdown=True, **FAST)
    from cnnprof.report.tables import breakdown_rows

    rows = breakdown_rows(r)
    assert sum(p["time_share"] for p in rows) == pytest.approx(1.0)
    assert sum(p["macs_share"] for p in rows) == pytest.approx(1.0)
    by_type = {p["type"]: p for p in rows}
    assert "depthwise conv" in by_type and "pointwise conv" in by_type
    counted = cnnprof.count_flops("mobilenet_v2", (1, 3, 64, 64), scope="all")
    assert sum(p["macs"] for p in rows) == counted.macs


class ExplodesAtBatch4(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if x.shape[0] >= 4 and not x.is_meta:  # OOM happens on real devices only
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.conv(x)


def test_oom_becomes_a_row_and_the_run_goes_on(cli, tmp_path, monkeypatch):
    results = benchmark(ExplodesAtBatch4(), (1, 3, 16, 16), batch_sizes=[1, 4, 2], **FAST)
    assert [r.status for r in results] == ["ok", "oom", "ok"]
    assert results[1].median_ms is None and results[1].error == "out of memory"
    path = tmp_path / "explode.py"
    path.write_text("from tests.test_runtime import ExplodesAtBatch4 as Net\n")
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    result = cli("bench", f"{path}:Net", "--batch-size", "1,4", "--resolution", "16",
                 "--warmup", "0", "--min-time", "0.05", "--format", "json")
    rows = json.loads(result.stdout)
    assert [r["status"] for r in rows] == ["ok", "oom"]
    assert result.exit_code == 1 and "out of memory" in result.stderr


def test_cuda_requested_without_cuda_is_a_clean_exit_2(cli, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = cli("bench", "resnet18", "--device", "cuda")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().startswith("error: --device cuda requested but CUDA is not available")
    assert len(result.stderr.strip().splitlines()) == 1
    result = cli("compare", "resnet18", "resnet34", "--bench", "--device", "cuda")
    assert result.exit_code == 2 and result.stdout == ""


def test_bench_cli_json_fields_and_breakdown(cli):
    rows = cli.json("bench", "resnet18", "--resolution", "32", "--batch-size", "1,2", "--warmup", "0",
                    "--min-time", "0.05", "--threads", "1", "--breakdown")
    assert [r["batch_size"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("model", "device", "batch_size", "dtype", "latency_ms", "throughput", "runs", "env", "gflop_per_s"):
            assert key in r
        assert set(r["latency_ms"]) == {"median", "mean", "min", "p90", "p99", "iqr"}
        assert r["throughput"] == pytest.approx(r["batch_size"] / (r["latency_ms"]["median"] / 1e3))
        assert r["env"]["threads"] == 1
        assert sum(p["time_share"] for p in r["breakdown"]) == pytest.approx(1.0)


def test_bench_table_and_bad_batch_sizes(cli):
    result = cli("bench", "resnet18", "--resolution", "32", "--warmup", "0", "--min-time", "0.05", "--breakdown")
    assert result.exit_code == 0
    assert "Median (ms)" in result.stdout and "Share of time" in result.stdout and "torch " in result.stdout
    bad = cli("bench", "resnet18", "--batch-size", "1,x")
    assert bad.exit_code == 2 and "comma-separated" in bad.stderr


def test_compare_bench_adds_latency_columns(cli):
    rows = cli.json("compare", "resnet18", "mobilenet_v3_small", "--resolution", "32", "--bench", "--min-time", "0.05")
    assert rows[0]["latency_ratio"] == 1.0
    # The ratio is the median of per-round ratios (interleaved timing), inside its own interval.
    interval = rows[1]["latency_ratio_interval"]
    assert interval["low"] <= rows[1]["latency_ratio"] <= interval["high"]
    assert interval["measurable"] == (not interval["low"] <= 1.0 <= interval["high"])
    assert rows[1]["throughput"] > 0 and rows[1]["bench_status"] == "ok" and rows[1]["rounds"] >= 10
    assert isinstance(rows[1]["noisy"], bool) and rows[1]["uncounted_ops"] == {}


@cuda
def test_cuda_run_uses_events_and_reports_peak_memory():
    results = benchmark("resnet18", (1, 3, 224, 224), device="cuda", batch_sizes=[1, 8], breakdown=True, **FAST)
    for r in results:
        assert r.status == "ok" and r.env.device == "cuda" and r.env.cudnn_benchmark
        assert r.peak_allocated > 0 and r.peak_reserved >= r.peak_allocated
        assert r.min_s <= r.median_s
        assert sum(t.time_s for t in r.breakdown) > 0


@cuda
def test_cuda_half_precision_and_channels_last():
    r = benchmark("mobilenet_v2", (8, 3, 224, 224), device="cuda", dtype="float16", channels_last=True, **FAST)
    assert r.status == "ok" and r.dtype == "float16"


@cuda
def test_cuda_real_oom_is_a_row(cli):
    rows = json.loads(cli("bench", "vgg16", "--device", "cuda", "--batch-size", "1,100000", "--warmup", "0",
                          "--min-time", "0.05", "--format", "json").stdout)
    assert [r["status"] for r in rows] == ["ok", "oom"]
    assert torch.cuda.memory_allocated() < 2**30  # the cache was emptied
