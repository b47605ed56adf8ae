"""Device profiles measured on a busy machine are not cached as truth (cnnprof.predict.trust): one measurement at
a time (a lock beside the cache file), the float32 peak measured again at the end, a sanity floor that needs no
datasheet, and warnings for a doubtful cached profile."""
import threading
import time

import pytest
import torch

from cnnprof.predict import calibration, trust
from cnnprof.predict.device import DeviceProfile, TypeFit, cache_path, cached_profile, save_profile


def profile(peak: float = 100e9, busy: str = "", fit_error: float = 0.1, threads: int | None = None) -> DeviceProfile:
    return DeviceProfile(device="cpu", name="test cpu", torch_version=torch.__version__,
                         threads=threads or torch.get_num_threads(), source="measured", peak_flops={"float32": peak},
                         bandwidth=10e9, op_overhead_s=5e-6,
                         calibration={"conv": TypeFit(1e-5, 50e9, 5e9, 3, fit_error)}, busy=busy)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNPROF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("cnnprof.predict.device.device_name", lambda device: "test cpu")
    return tmp_path


def test_cpu_hz_reads_the_fastest_clock_and_none_without_one(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu MHz\t\t: 2596.122\nprocessor\t: 1\ncpu MHz\t\t: 3000.5\nflags\t: x\n")
    assert trust.cpu_hz(str(info)) == pytest.approx(3000.5e6)
    info.write_text("processor\t: 0\nBogoMIPS\t: 50\n")
    assert trust.cpu_hz(str(info)) is None
    assert trust.cpu_hz(str(tmp_path / "absent")) is None


def test_the_floor_is_4_flops_per_cycle_per_thread():
    assert trust.floor(2, 2.5e9) == 2 * 2.5e9 * 4  # 20 GFLOP/s
    assert trust.floor(1, None) is None


def test_a_peak_that_moved_while_measured_is_busy():
    assert trust.drift(100.0, 70.0) == pytest.approx(0.3)
    reason = trust.busy_reason(285e9, 140e9, 2, 2.5e9)
    assert "changed from 285.0 GFLOP/s to 140.0 GFLOP/s" in reason and "another process" in reason
    assert trust.busy_reason(285e9, 270e9, 2, 2.5e9) == ""  # 5%: the same machine, idle


def test_a_peak_under_the_floor_is_busy_even_when_steady():
    # The case: two `cnnprof device --quick` at once cached 11.2 GFLOP/s on 2 threads (285 alone).
    reason = trust.busy_reason(11.2e9, 11.0e9, 2, 2.5e9)
    assert "11.0 GFLOP/s is under 20.0 GFLOP/s" in reason and "2 threads at 2.50 GHz" in reason
    assert trust.busy_reason(11.2e9, None, 2, None) == ""  # no clock known: no floor, no drift: trusted


def test_a_busy_profile_is_used_but_not_cached(cache):
    warnings = []
    assert save_profile(profile(busy="the machine was busy"), warnings.append) is None
    assert not list(cache.glob("*.json"))
    assert warnings == ["not caching the device profile: the machine was busy; it is used for this run only "
                        "(measure again on an idle machine)"]
    assert save_profile(profile(), warnings.append) is not None  # an idle one is cached
    assert len(list(cache.glob("*.json"))) == 1


def test_busy_is_never_written_into_the_cache_file(cache):
    path = save_profile(profile())
    assert "busy" not in path.read_text()


def test_a_doubtful_cached_profile_is_used_with_a_warning(cache, monkeypatch):
    monkeypatch.setattr(trust, "cpu_hz", lambda *a: 2.5e9)
    save_profile(profile(peak=1e9, fit_error=0.9))
    warnings = []
    loaded = cached_profile("cpu", warnings.append)
    assert loaded is not None and loaded.peak_flops["float32"] == 1e9
    assert len(warnings) == 2
    assert "is under" in warnings[0] and "busy machine" in warnings[0]
    assert "fits conv with a median error above 50%" in warnings[1]
    assert all(w.startswith("the cached device profile ") and "cnnprof device" in w for w in warnings)


def test_a_sound_cached_profile_loads_silently(cache, monkeypatch):
    monkeypatch.setattr(trust, "cpu_hz", lambda *a: 2.5e9)
    save_profile(profile(peak=300e9))
    warnings = []
    assert cached_profile("cpu", warnings.append) is not None and warnings == []


def test_calibration_measures_the_peak_again_and_flags_a_drift(monkeypatch):
    peaks = iter([300e9, 150e9])  # float32 at the start, float32 again at the end
    monkeypatch.setattr(calibration, "measure_gemm", lambda device, dt, n, t: next(peaks) if dt == "float32"
                        else (_ for _ in ()).throw(RuntimeError("no kernel")))
    monkeypatch.setattr(calibration, "measure_bandwidth", lambda *a: (1e10, 1e10))
    monkeypatch.setattr(calibration, "measure_overheads", lambda *a: (1e-6, 1e-6, 1e-7))
    monkeypatch.setattr(trust, "cpu_hz", lambda *a: None)
    measured = calibration.calibrate("cpu", micro=False)
    assert measured.peak_flops["float32"] == 300e9  # the better of the two: the machine's own peak
    assert "changed from 300.0 GFLOP/s to 150.0 GFLOP/s" in measured.busy


def test_measuring_takes_turns(tmp_path):
    """The second measurer waits (and hears so) until the first lets go."""
    path = tmp_path / "device-x.json"
    order, held = [], threading.Event()

    def first():
        with trust.measuring(path) as locked:
            order.append(("first in", locked))
            held.set()
            time.sleep(0.3)
            order.append(("first out", locked))

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    waited = []
    with trust.measuring(path, on_wait=lambda: waited.append(True)) as locked:
        order.append(("second in", locked))
    t.join()
    assert [o[0] for o in order] == ["first in", "first out", "second in"]
    assert all(o[1] for o in order) and waited == [True]


def test_an_unusable_cache_directory_measures_unlocked(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with trust.measuring(blocker / "sub" / "device.json") as locked:
        assert locked is False


def test_a_prediction_waiting_for_another_measurement_uses_its_profile(cache, monkeypatch):
    """profile_for measures only when, holding the lock, it still finds no cached profile."""
    from cnnprof.cli import device as cli_device

    def never(*a, **k):
        raise AssertionError("measured although another cnnprof had just cached the profile")

    monkeypatch.setattr(cli_device, "measure_with_progress", never)
    path, held, done = cache_path("cpu"), threading.Event(), threading.Event()

    def other():
        with trust.measuring(path):
            held.set()
            time.sleep(0.3)
            save_profile(profile(peak=300e9))
            done.set()  # inside the lock: profile_for may run the moment it is released

    threading.Thread(target=other).start()
    held.wait(5)
    used = cli_device.profile_for("cpu", None)
    assert done.is_set() and used.peak_flops["float32"] == 300e9
