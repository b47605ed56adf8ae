"""Device profiles are untrusted data: a hostile --device-spec file is one line and exit 2, a bad cache is a
warning and measured again, an unusable cache directory is a warning (the measured profile is still used);
never a traceback, never a hang."""
import json
import os
import threading

import pytest

from cnnprof.predict.device import DeviceProfile, TypeFit, cache_path, cached_profile, save_profile
from cnnprof.predict.profile_file import MAX_BYTES, ProfileError, checked

GOOD = DeviceProfile(device="cpu", name="Test CPU", torch_version="2.13.0", threads=1, source="measured",
                     peak_flops={"float32": 1e11}, bandwidth=1e10, op_overhead_s=2e-6, module_overhead_s=1e-6,
                     calibration={"conv": TypeFit(1e-6, 5e10, 1e10, 8, 0.05)}).to_json()


def with_(**changes):
    data = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        parts = key.split("__")
        node = data
        for part in parts[:-1]:
            node = node[part]
        if value is ...:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return data


HOSTILE = {
    "zero peak": with_(peak_flops={"float32": 0}),
    "negative bandwidth": with_(bandwidth=-1),
    "zero bandwidth": with_(bandwidth=0),
    "nan overhead": with_(op_overhead_s=float("nan")),
    "infinite peak": with_(peak_flops={"float32": float("inf")}),
    "string peak": with_(peak_flops={"float32": "fast"}),
    "list peaks": with_(peak_flops=[1, 2]),
    "no float32 peak": with_(peak_flops={"float16": 1e12}),
    "unknown dtype": with_(peak_flops={"float32": 1e11, "int4": 1e12}),
    "bool threads": with_(threads=True),
    "huge threads": with_(threads=10**9),
    "null name": with_(name=None),
    "missing bandwidth": with_(bandwidth=...),
    "device tpu": with_(device="tpu"),
    "fit not a mapping": with_(calibration={"conv": 3}),
    "zero rate fit": with_(calibration__conv__bytes_per_s=0),
    "negative samples": with_(calibration__conv__samples=-1),
    "complete as string": with_(complete="yes"),
    "empty mapping": {},
    "a number": 7,
    "a list of two": [GOOD, GOOD],
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_profile_is_one_error_naming_the_key(case):
    with pytest.raises(ProfileError) as info:
        checked(HOSTILE[case], "p.json")
    assert info.value.args[0].startswith("p.json: ") and "\n" not in info.value.args[0]


def test_a_good_profile_round_trips_and_infinite_rates_are_allowed():
    profile = DeviceProfile.from_json(GOOD)
    assert profile.to_json() == GOOD
    fit = with_(calibration__conv__flops_per_s=float("inf"))
    assert DeviceProfile.from_json(fit).calibration["conv"].time(1e9, 0) == pytest.approx(1e-6)


@pytest.mark.parametrize("case", ["zero peak", "string peak", "empty mapping", "a number"])
def test_device_spec_files_through_the_cli_exit_2_with_one_line(cli, tmp_path, case):
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps(HOSTILE[case]))
    for args in (["roofline", "resnet18"], ["compare", "resnet18", "mobilenet_v2", "--predict"], ["device"]):
        result = cli(*args, "--device-spec", str(spec))
        assert result.exit_code == 2 and result.stderr.startswith(f"error: --device-spec {spec}: ")
        assert len(result.stderr.strip().splitlines()) == 1


def special_files(tmp_path):
    """A FIFO, a directory, a link to /dev/zero, a file too big, a JSON nested deeper than a parser goes."""
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    (tmp_path / "big.json").write_text(" " * (MAX_BYTES + 1))
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "zeros.json").write_text("0" * 1000)
    return ["fifo.json", "dir.json", "zero.json", "big.json", "deep.json", "zeros.json"]


def test_special_files_are_refused_without_hanging(cli, tmp_path):
    done = []

    def run():
        for name in special_files(tmp_path):
            result = cli("roofline", "resnet18", "--device-spec", str(tmp_path / name))
            done.append((name, result.exit_code, len(result.stderr.strip().splitlines())))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), f"hung after {done}"
    assert [(code, lines) for _, code, lines in done] == [(2, 1)] * 6


def test_a_bad_cache_is_a_warning_and_ignored(tmp_path):
    path = cache_path("cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(HOSTILE["zero peak"]))
    heard = []
    assert cached_profile("cpu", heard.append) is None
    assert len(heard) == 1 and "ignoring the cached device profile" in heard[0] and "peak_flops" in heard[0]
    os.unlink(path)
    os.mkfifo(path)  # a FIFO as the cache file: refused, not opened
    assert cached_profile("cpu", heard.append) is None and "is a FIFO; a device profile must be a regular JSON file" in heard[1]


def test_an_unusable_cache_directory_is_a_warning_and_the_profile_is_still_used(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CNNPROF_CACHE_DIR", str(blocker / "cache"))  # a file where a directory should be
    heard = []
    assert save_profile(DeviceProfile.from_json(GOOD), heard.append) is None
    assert len(heard) == 1 and "cannot cache the device profile" in heard[0] and "this run only" in heard[0]
