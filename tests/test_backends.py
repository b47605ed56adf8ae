"""The fvcore cross-check agrees exactly with dispatch-level counting; meta counting scales for free."""
import json
import subprocess
import sys

import pytest

import cnnprof
from tests.conftest import GOLDEN, ZOO


FAST = ("resnet18", "mobilenet_v2", "shufflenet_v2_x0_5")  # the fast lane's representatives


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in ZOO])
def test_fvcore_agrees_exactly_in_conv_scope(name):
    # 112x112 keeps the real CPU forward of fvcore's trace cheap; the agreement holds at any size.
    shape = (1, 3, 112, 112)
    ours = cnnprof.count_flops(name, shape)
    theirs = cnnprof.count_flops(name, shape, backend="fvcore")
    assert theirs.macs == ours.macs > 0
    assert sum(s.macs for s in theirs.by_stage()) == theirs.macs


@pytest.mark.slow
def test_fvcore_agrees_at_224_on_reference_models():
    for name in ("resnet50", "mobilenet_v2"):
        assert cnnprof.count_flops(name, backend="fvcore").macs == GOLDEN[name]["macs"]


def _peak_rss_kb(code: list[str]) -> int:
    """Peak resident memory of a child process, in kB (Linux ru_maxrss)."""
    script = (f"import resource, subprocess, sys; subprocess.run({code!r}, check=True, stdout=subprocess.DEVNULL); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    return int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units differ off Linux")
def test_huge_input_is_counted_on_meta_without_allocating():
    # ~200 GB of fp32 activations if it ran for real.
    args = [sys.executable, "-m", "cnnprof.cli", "flops", "resnet152", "--batch-size", "64", "--resolution", "1024",
            "--format", "json"]
    row = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)[0]
    assert row["macs"] == 64 * cnnprof.count_flops("resnet152", (1, 3, 1024, 1024)).macs
    assert row["input_shape"] == [64, 3, 1024, 1024]
    baseline = _peak_rss_kb([sys.executable, "-c", "import torch"])
    peak = _peak_rss_kb(args)
    assert peak < baseline + 300 * 1024, (peak, baseline)  # within 300 MB of `import torch` alone
