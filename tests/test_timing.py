"""The one measurement loop (cnnprof.timing.timer), its settings and statistics, and what is built on it
(time_call, the calibration grid). Deterministic: a fake clock that advances only while the timed function
runs, so every expectation below is derived by hand from the durations given."""
import gc
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from cnnprof.timing import stats, timer
from cnnprof.timing.settings import check_device, device_settings, validate_timing
from cnnprof.timing.timer import StopRule, measure
from tests.conftest import cuda


class Work:
    """A function to time whose call i takes durations[i] seconds of a fake clock (the last one repeats)."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0
        self.gc_during: list[bool] = []  # gc.isenabled() at every call

    def clock(self) -> float:
        return self.now

    def __call__(self) -> None:
        self.gc_during.append(gc.isenabled())
        self.now += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


@pytest.fixture
def fake_clock():
    """set(clock): the CPU clock of every measurement for this test (the real one comes back after it)."""
    real = timer.CLOCK[0]

    def use(clock):
        timer.CLOCK[0] = clock

    yield use
    timer.CLOCK[0] = real


@pytest.fixture
def work(fake_clock):
    """Work(durations) whose clock is the CPU clock of every measurement for this test."""
    def make(*durations):
        w = Work(durations)
        fake_clock(w.clock)
        return w
    return make


# --- the stop rule ----------------------------------------------------------------------------------------

def test_min_runs_are_taken_however_short_the_calls():
    m = measure(Work([1.0]), rule=StopRule(min_time=0.0, min_runs=5))  # real clock: only the count matters
    assert m.runs == 5 and m.number == 1 and m.cold_s is None and m.warmup_runs == 0


def test_min_time_counts_the_timed_seconds(work):
    w = work(0.25)
    m = measure(w, rule=StopRule(min_time=1.0, min_runs=1))
    assert m.times_s == (0.25,) * 4 and w.calls == 4  # 4 x 0.25 s reach 1 s


def test_both_minimums_must_be_met(work):
    assert measure(work(0.125), rule=StopRule(min_time=1.0, min_runs=2)).runs == 8  # time decides
    assert measure(work(2.0), rule=StopRule(min_time=1.0, min_runs=3)).runs == 3  # count decides


def test_the_maximums_stop_a_loop_that_would_not_end(work):
    assert measure(work(0.25), rule=StopRule(min_time=100.0, max_runs=3)).runs == 3
    assert measure(work(0.25), rule=StopRule(min_time=100.0, max_time=1.0)).runs == 4
    assert measure(work(0.0), rule=StopRule(min_time=1.0, max_runs=1000)).runs == 1000  # a clock that never moves
    assert StopRule(min_time=math.inf).done(timer.MAX_RUNS, 0.0)  # the default cap holds whatever the minimums


def test_stop_rule_refuses_negative_and_nan():
    with pytest.raises(Exception, match=r"`min_time=nan`"):
        StopRule(min_time=float("nan"))
    with pytest.raises(Exception, match=r"`min_runs=-1`: expected 0 or more"):
        StopRule(min_runs=-1)
    assert StopRule.calls(2) == StopRule(min_runs=2, max_runs=2)


def test_wall_budget_counts_the_loops_own_time_too(fake_clock):
    """A clock that advances 1 s per read, calls that take no time: a sample reads it twice (1 s timed),
    the wall budget also reads it once per check of the rule (3 s of wall time per sample)."""
    now = iter(range(10**6))
    fake_clock(lambda: float(next(now)))
    timed = measure(lambda: None, rule=StopRule(min_time=10.0))
    assert timed.times_s == (1.0,) * 10
    now = iter(range(10**6))
    wall = measure(lambda: None, rule=StopRule(min_time=10.0, wall=True))
    # start=0; checks read 1, 4, 7 (go on) and 10 (stop): three samples
    assert wall.times_s == (1.0,) * 3


# --- the phases: cold call, warm-up, samples --------------------------------------------------------------

def test_cold_call_is_reported_on_its_own_and_warmup_is_excluded(work):
    w = work(5.0, 2.0, 2.0, 1.0)
    seen = []
    m = measure(w, rule=StopRule(min_runs=3), cold=True, warmup=StopRule.calls(2), on_warm=lambda: seen.append(w.calls))
    assert m.cold_s == 5.0 and m.warmup_runs == 2 and m.times_s == (1.0, 1.0, 1.0)
    assert seen == [3] and w.calls == 6  # on_warm runs after the cold call and the warm-up, before the samples


def test_warmup_in_seconds_of_wall_time(work):
    w = work(5.0, 0.5)
    m = measure(w, rule=None, cold=True, warmup=StopRule(min_time=1.0, min_runs=1, wall=True))
    assert m.cold_s == 5.0 and m.warmup_runs == 2 and m.times_s == () and m.median_s is None


def test_batching_divides_each_sample_by_its_calls(work):
    w = work(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
    m = measure(w, rule=StopRule(min_runs=2), number=4)
    assert m.number == 4 and w.calls == 8
    assert m.times_s == ((1 + 2 + 3 + 4) / 4, (5 + 6 + 7 + 8) / 4) and m.median_s == 4.5
    with pytest.raises(Exception, match="`number=0`"):
        measure(w, number=0)


def test_gc_is_paused_only_while_samples_are_taken_and_restored(work):
    w = work(1.0)
    assert gc.isenabled()
    measure(w, rule=StopRule(min_runs=2), cold=True, warmup=StopRule.calls(1))
    assert w.gc_during == [True, True, False, False] and gc.isenabled()
    gc.disable()
    try:
        measure(w, rule=StopRule(min_runs=1))
        assert not gc.isenabled()  # a caller's disabled collector stays disabled
    finally:
        gc.enable()

    def fails():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        measure(fails)
    assert gc.isenabled()


def test_time_call_is_the_median_of_the_loop_after_its_warmup(work):
    from cnnprof.predict import device

    assert device.CLOCK is timer.CLOCK  # one injection point, under both names
    assert device.time_call(work(9, 9, 1, 3, 2, 4, 5), "cpu", min_time=0.0, min_runs=5, warmup=2) == 3
    # an even count: the mean of the two middle samples (the one median of cnnprof.timing.stats)
    assert device.time_call(work(9, 1, 3, 2, 4), "cpu", min_time=0.0, min_runs=4, warmup=1) == 2.5


# --- settings ---------------------------------------------------------------------------------------------

def test_device_settings_set_and_restore_threads_and_cudnn_even_on_error():
    before, cudnn = torch.get_num_threads(), torch.backends.cudnn.benchmark
    target = 2 if before == 1 else 1
    torch.backends.cudnn.benchmark = True
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with device_settings("cpu", threads=target, dtype="bfloat16", channels_last=True) as env:
                assert torch.get_num_threads() == target and torch.is_inference_mode_enabled()
                assert not torch.backends.cudnn.benchmark  # off for the CPU unless asked
                assert (env.threads, env.device, env.dtype, env.channels_last, env.cudnn_benchmark) == \
                    (target, "cpu", "bfloat16", True, False)
                raise RuntimeError("inside")
        assert torch.get_num_threads() == before and torch.backends.cudnn.benchmark
        assert not torch.is_inference_mode_enabled()
        with device_settings("cpu", cudnn_benchmark=True, compiled=True) as env:
            assert env.cudnn_benchmark and env.compiled and env.threads == before
    finally:
        torch.backends.cudnn.benchmark = cudnn


def test_a_users_module_keeps_normal_tensors_after_a_benchmark():
    from torch import nn

    from cnnprof.timing.runtime import benchmark

    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    r = benchmark(net, (1, 3, 8, 8), dtype="bfloat16", warmup=0.0, min_time=0.0, min_runs=1)
    assert r.status == "ok" and r.runs >= 1
    assert net[0].weight.dtype == torch.bfloat16 and not net[0].weight.is_inference()


def test_library_errors_name_python_parameters_and_the_cli_prints_flags(monkeypatch):
    from cnnprof.cli.options import as_options

    cases = [(lambda: validate_timing(-1.0, 1.0, 5, None, "float32"), "`warmup=-1.0`", "--warmup -1.0"),
             (lambda: validate_timing(0.5, math.inf, 5, None, "float32"), "`min_time=inf`", "--min-time inf"),
             (lambda: validate_timing(0.5, 1.0, 0, None, "float32"), "`min_runs=0`: expected 1 to 1000000",
              "--min-runs 0: expected 1 to 1000000"),
             (lambda: validate_timing(0.5, 1.0, 5, 10**6, "float32"), "`threads=1000000`", "--threads 1000000")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cases.append((lambda: check_device("cuda"), "`device=cuda` requested", "--device cuda requested"))
    for fail, library, cli in cases:
        with pytest.raises(Exception) as info:
            fail()
        assert library in str(info.value) and cli in as_options(str(info.value))
    assert "use --device cpu" in as_options(str(info.value))


def test_no_cli_flag_strings_in_timing_and_predict():
    root = Path(__file__).resolve().parent.parent / "cnnprof"
    for package in ("timing", "predict"):
        for path in sorted((root / package).glob("*.py")):
            assert not re.findall(r"--[a-z]", path.read_text()), path


# --- statistics -------------------------------------------------------------------------------------------

def test_statistics_by_hand():
    xs = [4.0, 1.0, 3.0, 2.0]  # sorted 1 2 3 4
    assert stats.median(xs) == 2.5 and stats.quantile(xs, 0.25) == 1.75 and stats.quantile(xs, 0.75) == 3.25
    assert stats.iqr(xs) == 1.5 and stats.is_noisy(xs)  # 1.5 > 0.1 * 2.5
    assert not stats.is_noisy([1.0, 1.0, 1.05, 1.0]) and not stats.is_noisy([])
    assert stats.median([]) is None and stats.iqr([]) is None and stats.median([7.0]) == 7.0
    r = stats.ratio_stat([2.0, 2.0, 2.0])
    assert (r.median, r.low, r.high, r.iqr, r.measurable) == (2.0, 2.0, 2.0, 0.0, True)


# --- the calibration grid and the calibration ------------------------------------------------------------

def test_grid_is_the_table_of_builders_and_shapes():
    from cnnprof.predict import microbench

    grid = microbench.grid()
    assert len(grid) == sum(len(rows) for *_, rows in microbench.GRID) == 112
    labels = {label: op_type for op_type, label, _ in grid}
    assert grid[0][:2] == ("conv", "conv 3x3 3->24 @208 s2")
    assert labels["dw 5x5 80 @52 s2"] == "depthwise conv" and labels["grouped 3x3 144 g36 @52"] == "grouped conv"
    assert labels["max pool 3x3 48 @120"] == labels["avg pool 2x2 264 @52"] == "pooling"
    assert labels["mul broadcast 88 @104"] == "element-wise" and labels["gelu 352 @52"] == "activation (exp)"
    make = next(m for _, label, m in grid if label == "conv 1x1 24->88 @104")
    flops, nbytes = microbench.features(make, "float32")
    assert flops == 2 * 24 * 88 * 104 * 104  # nvidia FLOPs: 2 per MAC
    assert nbytes == 4 * (24 * 104 * 104 + 88 * 24 + 88 * 104 * 104)  # input, weight, output


def test_calibration_steps_and_profile_from_known_measurements(monkeypatch):
    import cnnprof.predict.calibration as cal
    import cnnprof.predict.microbench as mb

    grid = [g for g in mb.grid() if g[0] == "activation"][:3]
    monkeypatch.setattr(mb, "grid", lambda: grid)
    monkeypatch.setattr(cal, "measure_gemm", lambda device, dt, n, t: {"float32": 1e9, "bfloat16": 2e9}.get(dt) or
                        (_ for _ in ()).throw(RuntimeError("no float16 GEMM")))
    monkeypatch.setattr(cal, "measure_bandwidth", lambda device, nbytes, t: (2e9, 3e9))
    monkeypatch.setattr(cal, "measure_overheads", lambda device, t: (1e-6, 2e-6, 3e-6))
    monkeypatch.setattr(cal, "time_call", lambda fn, device, **kw: 1e-5)
    monkeypatch.setattr(cal.trust, "cpu_hz", lambda *a: 2.5e9)
    steps = []
    prof = cal.calibrate("cpu", quick=True, on_step=lambda label, done, total: steps.append((done, total)))
    assert steps == [(i, 3 + 2 + 3 + 1) for i in range(9)]  # peaks, memory, overheads, grid, peak again
    assert "1.0 GFLOP/s is under" in prof.busy  # 1 GFLOP/s on a 2.5 GHz CPU: not an idle machine's; not cached
    assert prof.peak_flops == {"float32": 1e9, "bfloat16": 2e9} and prof.bandwidth == 3e9
    assert (prof.copy_bandwidth, prof.triad_bandwidth) == (2e9, 3e9)
    assert (prof.op_overhead_s, prof.module_overhead_s, prof.view_overhead_s) == (1e-6, 2e-6, 3e-6)
    assert set(prof.calibration) == {"activation"} and prof.calibration["activation"].samples == 3
    assert prof.complete and prof.source == "measured"
    with pytest.raises(Exception, match="unknown dtype 'float64'"):
        cal.calibrate("cpu", "float64")


# --- CUDA (skipped without a GPU) -------------------------------------------------------------------------

@cuda
def test_cuda_events_batches_and_sync_each():
    x = torch.randn(1024, 1024, device="cuda")
    m = measure(lambda: x @ x, "cuda", StopRule(min_time=0.0, min_runs=5), cold=True, warmup=StopRule.calls(2),
                number=4, sync_each=True)
    assert m.runs == 5 and m.number == 4 and all(t > 0 for t in m.times_s) and m.cold_s > 0
    queued = measure(lambda: x @ x, "cuda", StopRule(min_time=0.01, min_runs=3))  # one synchronisation at the end
    assert queued.runs >= 3 and all(t > 0 for t in queued.times_s)
    with device_settings("cuda") as env:
        assert torch.backends.cudnn.benchmark and env.cudnn_benchmark and env.device_name


@cuda
def test_cuda_time_call_and_breakdown():
    from cnnprof.predict.device import time_call
    from cnnprof.timing.breakdown import breakdown

    x = torch.randn(256, 256, device="cuda")
    assert time_call(lambda: torch.relu(x), "cuda", min_time=0.0, min_runs=3) > 0
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).cuda().eval()
    y = torch.randn(1, 3, 32, 32, device="cuda")
    with torch.inference_mode():
        rows = breakdown(lambda: net(y), "cuda", 0.0)
    assert {r.type for r in rows} >= {"conv 3x3", "activation"} and all(r.time_s > 0 for r in rows)


def test_timing_on_the_cpu_sets_glibc_malloc_to_keep_freed_memory_once_per_process(monkeypatch):
    from cnnprof.timing import timer

    calls = []

    class FakeLibc:
        def mallopt(self, option, value):
            calls.append((option, value))
            return 1

    monkeypatch.setattr(timer, "_glibc", lambda: FakeLibc())
    timer.keep_freed_memory.cache_clear()  # as in a fresh process
    try:
        measure(lambda: None, "cpu", StopRule.calls(2))
        assert calls == [(-4, 0), (-1, -1)]  # no mmap per block, no trimming of the heap's top
        measure(lambda: None, "cpu", StopRule.calls(2))
        with device_settings("cpu"):
            pass
        assert len(calls) == 2  # once: glibc's adaptive threshold cannot be restored, so it is not "undone"
    finally:
        timer.keep_freed_memory.cache_clear()  # the next timing sets it for real (the fake's calls changed nothing)


_FAULTS_PER_ROUND = """
import resource, torch
def faults_per_round(rounds=5):
    for _ in range(30):  # warm-up: the heap grows to hold the block, as a timing's warm-up calls make it
        torch.ones(1 << 24)  # 64 MB, touched, freed: above glibc's largest mmap threshold
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.ones(1 << 24)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and getrusage page-fault counts")
def test_a_large_block_freed_and_allocated_again_while_timing_faults_no_pages_in_again():
    import subprocess

    from cnnprof.timing import timer

    if timer._glibc() is None:
        pytest.skip("malloc is not glibc's")
    scope: dict = {}
    exec(_FAULTS_PER_ROUND, scope)
    timer.keep_freed_memory()  # what any CPU timing of this process did already
    kept = scope["faults_per_round"]()
    fresh = subprocess.run([sys.executable, "-c", _FAULTS_PER_ROUND + "print(faults_per_round())"],
                           capture_output=True, text=True, check=True)
    assert kept < 1000 < float(fresh.stdout)  # 64 MB are 16,384 pages of 4 kB: glibc's default maps them anew
