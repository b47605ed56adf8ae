"""Benchmark protocol: statistics from raw samples, throughput, breakdown shares, OOM rows, device errors.
No timed assertions: only consistency between the numbers a run reports."""
import json
import statistics

import pytest
import torch
from torch import nn

import cnnprof
from cnnprof.timing.results import BenchResult, Environment
from cnnprof.timing.runtime import benchmark
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


# --- issue 10: interleaved ratios, memory estimate, interruption ---------------------------------------------

def test_ratio_interval_and_no_measurable_difference():
    from cnnprof.timing.stats import ratio_stat

    slower = ratio_stat([1.20, 1.22, 1.19, 1.21, 1.25, 1.18, 1.20, 1.23, 1.21, 1.19])
    assert slower.median == pytest.approx(1.205) and slower.low <= slower.median <= slower.high
    assert slower.measurable and slower.low > 1.0
    same = ratio_stat([0.95, 1.04, 0.99, 1.02, 0.97, 1.03, 1.00, 0.98, 1.05, 0.96])
    assert not same.measurable and same.low <= 1.0 <= same.high


def test_interleaved_rounds_give_each_model_a_ratio_to_the_first():
    from cnnprof.timing.interleave import interleaved_benchmark
    from cnnprof.models.spec import resolve

    sources = [resolve("resnet18"), resolve("mobilenet_v3_small")]
    results, ratios = interleaved_benchmark(sources, [(1, 3, 32, 32)] * 2, threads=1, warmup=0.0, min_time=0.05)
    assert [r.status for r in results] == ["ok", "ok"] and all(r.rounds >= 10 for r in results)
    assert ratios[0] is None and len(ratios[1].rounds) == results[1].rounds
    assert ratios[1].low <= ratios[1].median <= ratios[1].high


def test_memory_estimate_refuses_what_cannot_fit_and_auto_batch_halves(cli, monkeypatch):
    from cnnprof.counting import footprint as memory
    from cnnprof.models.spec import build_model

    meta = build_model("resnet18", "meta")
    one, eight = memory.estimate_bytes(meta, (1, 3, 64, 64)), memory.estimate_bytes(meta, (8, 3, 64, 64))
    weights = sum(p.numel() * 4 for p in meta.parameters())
    assert weights < one < eight < weights + 8 * (one - weights) + 1
    monkeypatch.setattr(memory, "available_bytes", lambda device: (one + eight) // 2)
    result = cli("bench", "resnet18", "--resolution", "64", "--batch-size", "8,1", "--warmup", "0",
                 "--min-time", "0.02", "--threads", "1", "--format", "json")
    rows = json.loads(result.stdout)
    assert [(r["batch_size"], r["status"]) for r in rows] == [(8, "oom"), (1, "ok")]  # the OOM did not stop batch 1
    assert "not attempted" in rows[0]["error"] and result.exit_code == 1
    auto = cli.json("bench", "resnet18", "--resolution", "64", "--batch-size", "8", "--warmup", "0",
                    "--min-time", "0.02", "--threads", "1", "--auto-batch")[0]
    assert auto["status"] == "ok" and auto["requested_batch_size"] == 8 and auto["batch_size"] < 8


def test_cpu_allocation_failure_is_an_oom_row():
    from cnnprof.timing.prepare import failure

    exc = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                       "to allocate 1099511627776 bytes")
    assert failure(exc)[0] == "oom" and failure(MemoryError())[0] == "oom"


def test_float16_on_cpu_warns_and_threads_are_recorded_in_words(cli):
    result = cli("bench", "resnet18", "--resolution", "32", "--warmup", "0", "--min-time", "0.02", "--threads", "1",
                 "--dtype", "float16")
    assert "float16 on a CPU is usually much slower" in result.stderr
    assert "· 1 thread ·" in result.stdout


@pytest.mark.slow
def test_sigint_during_bench_keeps_finished_rows(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "rows.jsonl"
    cmd = [sys.executable, "-m", "cnnprof.cli", "bench", "resnet18", "mobilenet_v3_small", "mobilenet_v2",
           "--resolution", "32", "--batch-size", "1,2", "--warmup", "0", "--min-time", "0.3", "--threads", "1",
           "--format", "json", "--output", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not (out.exists() and out.read_text().count("\n") >= 3):
        time.sleep(0.05)  # the three batch-1 rows are written as soon as their rounds finish
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    rows = json.loads(stdout)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    finished = [(r["model"], r["batch_size"]) for r in rows if r["status"] == "ok"]
    assert finished[:3] == [("resnet18", 1), ("mobilenet_v3_small", 1), ("mobilenet_v2", 1)]
    assert [(r["model"], r["batch_size"], r["status"]) for r in written] == \
        [(r["model"], r["batch_size"], r["status"]) for r in rows]
    assert all(r["status"] in ("ok", "interrupted") for r in rows)
    assert "interrupted" in stderr and "Traceback" not in stderr


def test_auto_batch_halves_after_a_real_out_of_memory_failure():
    from cnnprof.timing.interleave import interleaved_benchmark
    from cnnprof.models.spec import resolve

    results, _ = interleaved_benchmark([resolve(ExplodesAtBatch4())], [(16, 3, 16, 16)], auto_batch=True, **FAST)
    assert results[0].status == "ok" and results[0].batch_size == 2 and results[0].requested_batch_size == 16
    plain, _ = interleaved_benchmark([resolve(ExplodesAtBatch4())], [(16, 3, 16, 16)], **FAST)
    assert plain[0].status == "oom" and plain[0].batch_size == 16


def test_auto_batch_jumps_from_a_huge_batch_with_few_estimates(monkeypatch):
    from cnnprof.counting import footprint as memory
    from cnnprof.inputs import InputSpec
    from cnnprof.models.spec import build_model
    from cnnprof.timing.interleave import _shrink

    meta = build_model("resnet18", "meta")
    one, eight = memory.estimate_bytes(meta, (1, 3, 64, 64)), memory.estimate_bytes(meta, (8, 3, 64, 64))
    monkeypatch.setattr(memory, "available_bytes", lambda device: (one + eight) // 2)
    calls = []
    estimate = memory.estimate_bytes
    monkeypatch.setattr(memory, "estimate_bytes", lambda *a, **k: calls.append(1) or estimate(*a, **k))
    specs, refused = _shrink(meta, (InputSpec((2**20, 3, 64, 64)),), "cpu", "float32", auto_batch=True)
    batch = specs[0].shape[0]
    assert refused is None and len(calls) <= 4  # halving one step at a time took 20 estimates
    assert batch & (batch - 1) == 0 and estimate(meta, (batch, 3, 64, 64)) <= (one + eight) // 2
    assert estimate(meta, (2 * batch, 3, 64, 64)) > (one + eight) // 2  # the largest of 2**20, 2**19, ... that fits
