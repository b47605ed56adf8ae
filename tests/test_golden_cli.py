"""Golden files that freeze what the CLI prints, so that a restructuring of the package ("behaviour
unchanged") can be checked against the output of the code before it (torchinfo keeps `.out` files the same way).

Every case in CASES is (golden file name, argv). The test runs `cnnprof ARGV` in-process (typer's CliRunner
on the Typer app, no subprocess), checks the exit code is 0 and compares stdout with tests/golden_cli/NAME:

- `.json` (`--format json`): parsed and compared as data, exactly (integers, floats, strings, row order);
  a failure names the first differing keys, e.g. `[3].by_type[2].macs: golden 10838016, now 10838017`.
- `.out` (rich tables), `.md` (`--format markdown`), `.csv` (`--format csv`): compared as text; a failure
  shows the first differing lines. Tables are rendered at a fixed width: COLUMNS=100 (cnnprof's console
  takes the width from COLUMNS when stdout is not a terminal), with FORCE_COLOR / NO_COLOR / TTY_* unset.

No case prints a timestamp, a measured time or this machine's name. One thing is normalised: the absolute
path of the checkout, which the error messages of invalid sweep/match rows contain (config file paths),
becomes `<repo>` (see _normalise). Latency appears only as a prediction from the fixed, synthetic device
profile committed next to the golden files (`tests/golden_cli/fixed_cpu_profile.json`, passed as
`--device-spec FILE.json`; it is an input, not a golden file, and nothing is measured at test time) or from a
datasheet (`--device-spec h100`). Commands that measure (`bench`, `--bench`, `device` without
`--device-spec`) and `search` (Optuna, wall-clock dependent, writes a study) are left out.

The fixed profile was written once with the Python API (cnnprof.predict.device): a DeviceProfile(device="cpu",
name="golden fixed CPU (synthetic profile, not measured)", peaks 100/25/5 GFLOP/s (float32/bfloat16/float16),
12 GB/s, 4 us per op, a TypeFit per op type except `linear` and `grouped conv`, so that both the calibrated
and the roofline fallback are exercised), saved with `json.dumps(profile.to_json(), indent=2)`. Keep it
as it is: the golden files depend on its numbers.

Overwrite switch: `CNNPROF_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_cli.py` rewrites every golden
file from the current code instead of comparing (then review `git diff tests/golden_cli`). Only do that when
a change of output is intended. The whole-zoo cases are marked `slow` (`-m "not slow"` skips them); the rest
is a fast representative subset.
"""
from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cnnprof

# The Typer app with every command registered (the same object as cnnprof.cli.common.app; importing the
# package `cnnprof.cli` registers the commands).
from cnnprof.cli import app

# Checkout roots that may appear in paths: this test file's, and the imported package's (if installed elsewhere).
ROOTS = sorted({str(Path(__file__).resolve().parents[1]), str(Path(cnnprof.__file__).resolve().parents[1])},
               key=len, reverse=True)
GOLDEN_DIR = Path(__file__).parent / "golden_cli"
PROFILE = GOLDEN_DIR / "fixed_cpu_profile.json"  # an input of the roofline / --predict cases, not a golden file
UPDATE = os.environ.get("CNNPROF_UPDATE_GOLDEN") == "1"
HINT = "\n(if the change is intended, CNNPROF_UPDATE_GOLDEN=1 rewrites the golden files; review git diff)"
WIDTH = "100"
# What the rich console reads from the environment: a fixed width, no colour, not a terminal.
ENV = {"COLUMNS": WIDTH, "LINES": None, "FORCE_COLOR": None, "NO_COLOR": None, "TTY_COMPATIBLE": None,
       "TTY_INTERACTIVE": None, "CLICOLOR_FORCE": None, "JUPYTER_COLUMNS": None, "JUPYTER_LINES": None,
       "CNNPROF_DEBUG": None}

J = ["--format", "json"]
SPEC = ["--device-spec", "{profile}"]  # replaced by the absolute path of PROFILE
ROOFLINE_MODELS = ["resnet18", "mobilenet_v2", "efficientnet_b0", "convnext_tiny"]  # conv/SE/dw/LayerNorm/GELU
COMPARE3 = ["resnet50", "resnext50", "mobilenet_v2"]

# (golden file name, argv). A name ending in .json is compared as data, anything else as text.
CASES = [
    # list: no torch, instant.
    ("list.json", ["list", *J]),
    ("list.out", ["list"]),
    # params over the whole zoo (no model argument = the 25 zoo models).
    ("params.json", ["params", *J]),
    ("params_by_stage.json", ["params", "--by", "stage", *J]),
    ("params_by_type.json", ["params", "--by", "type", *J]),
    ("params_by_layer.json", ["params", "--by", "layer", *J]),
    ("params_resnet50_by_stage.out", ["params", "resnet50", "--by", "stage"]),
    ("params_mobilenet_v3_large_by_type.md", ["params", "mobilenet_v3_large", "--by", "type", "--format", "markdown"]),
    # flops over the whole zoo.
    ("flops_conv.json", ["flops", "--scope", "conv", *J]),
    ("flops_all.json", ["flops", "--scope", "all", *J]),
    ("flops_nvidia.json", ["flops", "--convention", "nvidia", *J]),
    ("flops_by_layer.json", ["flops", "--by", "layer", *J]),
    ("flops_by_op.json", ["flops", "--by", "op", *J]),
    ("flops_by_stage.json", ["flops", "--by", "stage", *J]),
    ("flops_by_type.json", ["flops", "--by", "type", *J]),
    # flops, a fast subset (a few models, every breakdown, both scopes and conventions).
    ("flops_subset_all_nvidia_by_type.json", ["flops", "resnet50", "mobilenet_v3_large", "convnext_tiny",
                                              "--scope", "all", "--convention", "nvidia", "--by", "type", *J]),
    ("flops_subset_by_layer_depth3.json", ["flops", "resnet18", "shufflenet_v2_x1_0", "--by", "layer", "--depth", "3",
                                           *J]),
    ("flops_subset_all_by_op.json", ["flops", "mobilenet_v2", "se_resnet50", "--scope", "all", "--by", "op", *J]),
    ("flops_subset_by_stage_batch.json", ["flops", "regnet_y_400mf", "resnet50@stride_in_1x1=true", "--by", "stage",
                                          "--batch-size", "1,8", "--resolution", "160", *J]),
    ("flops_resnet18_mobilenet_v2_by_type.out", ["flops", "resnet18", "mobilenet_v2", "--by", "type"]),
    ("flops_mobilenet_v2_all_by_type.csv", ["flops", "mobilenet_v2", "--scope", "all", "--by", "type",
                                            "--format", "csv"]),
    # compare.
    ("compare_resnet50_resnext50_mobilenet_v2.json", ["compare", *COMPARE3, *J]),
    ("compare_resnet50_resnext50_mobilenet_v2_all_nvidia.json", ["compare", *COMPARE3, "--scope", "all",
                                                                 "--convention", "nvidia", *J]),
    ("compare_resnet50_mobilenet_v2_predict.json", ["compare", "resnet50", "mobilenet_v2", "--predict", *SPEC, *J]),
    ("compare_resnet50_resnext50.out", ["compare", "resnet50", "resnext50"]),
    ("compare_resnet50_resnext50_mobilenet_v2.csv", ["compare", *COMPARE3, "--format", "csv"]),
    # device profile loaded from the fixed file (nothing measured).
    ("device_from_file.json", ["device", *SPEC, *J]),
    ("device_from_file.out", ["device", *SPEC]),
    # roofline on the fixed profile (calibrated) and on a datasheet (roofline only).
    ("roofline_by_layer.json", ["roofline", *ROOFLINE_MODELS, "--by", "layer", *SPEC, *J]),
    ("roofline_by_type.json", ["roofline", *ROOFLINE_MODELS, "--by", "type", *SPEC, *J]),
    ("roofline_by_stage.json", ["roofline", *ROOFLINE_MODELS, "--by", "stage", *SPEC, *J]),
    ("roofline_resnet50_h100_by_type.json", ["roofline", "resnet50", "--by", "type", "--device-spec", "h100", *J]),
    ("roofline_mobilenet_v2_by_type.out", ["roofline", "mobilenet_v2", "--by", "type", *SPEC]),
    # sweep: counted metrics only (no --bench); one --predict on the fixed profile.
    ("sweep_mobilenet_v1_width.json", ["sweep", "mobilenet_v1", "--set", "width_mult=1,0.75,0.5,0.25", *J]),
    ("sweep_mobilenet_v1_width_resolution.json", ["sweep", "mobilenet_v1", "--set", "width_mult=1,0.5",
                                                  "--set", "resolution=224,160", *J]),
    ("sweep_resnet50_groups_invalid.json", ["sweep", "resnet50", "--set", "groups=32,3", "--scope", "all",
                                            "--convention", "nvidia", *J]),  # groups=3 is an invalid row
    ("sweep_mobilenet_v1_predict.json", ["sweep", "mobilenet_v1", "--set", "width_mult=1,0.5", "--predict", *SPEC,
                                         *J]),
    ("sweep_mobilenet_v1_width_resolution.out", ["sweep", "mobilenet_v1", "--set", "width_mult=1,0.5",
                                                 "--set", "resolution=224,160"]),
    # match: iso-MACs (integer knob), a target (float knob), params; one --predict latency target.
    ("match_resnext50_to_resnet50.json", ["match", "resnext50", "--to", "resnet50", "--vary", "width_per_group",
                                          "--set", "groups=1,8,32", *J]),
    ("match_mobilenet_v1_target.json", ["match", "mobilenet_v1", "--vary", "width_mult", "--target", "300M", *J]),
    ("match_mobilenet_v2_params.json", ["match", "mobilenet_v2", "--vary", "width_mult", "--metric", "params",
                                        "--to", "mobilenet_v1", "--range", "0.5:1.5", *J]),
    # Without --range the bracket grows to an invalid width_mult and the search falls back to a scan (73 evals).
    ("match_mobilenet_v2_params_scan.json", ["match", "mobilenet_v2", "--vary", "width_mult", "--metric", "params",
                                             "--to", "mobilenet_v1", *J]),
    ("match_mobilenet_v1_predict.json", ["match", "mobilenet_v1", "--vary", "width_mult", "--metric", "latency",
                                         "--target", "5ms", "--predict", *SPEC, *J]),
    ("match_mobilenet_v1_target.out", ["match", "mobilenet_v1", "--vary", "width_mult", "--target", "300M"]),
]


# Whole-zoo cases (and one long match) that take 2-5 s each on a 2-core machine: marked slow.
SLOW = {"params_by_layer.json", "flops_conv.json", "flops_all.json", "flops_nvidia.json", "flops_by_layer.json",
        "flops_by_op.json", "flops_by_stage.json", "flops_by_type.json", "match_mobilenet_v2_params_scan.json"}
PARAMS = [pytest.param(name, args, id=name, marks=[pytest.mark.slow] if name in SLOW else []) for name, args in CASES]


def _argv(args: list[str]) -> list[str]:
    return [a.replace("{profile}", str(PROFILE)) for a in args]


def _normalise(text: str) -> str:
    """The one machine-dependent thing in the outputs: error messages of invalid rows (sweep, match) name the
    config file by its absolute path, e.g. /home/me/cnnprof/configs/resnet50.yaml; the checkout's location
    becomes <repo>. Done on the text, JSON included (json.dumps leaves / as it is)."""
    for root in ROOTS:
        text = text.replace(f"{root}{os.sep}", "<repo>/")
    return text


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(app, _argv(args), env=ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, f"cnnprof {' '.join(args)} exited {result.exit_code}:\n{result.stderr[-2000:]}"
    return _normalise(result.stdout)


def _first_differences(golden, now, path: str = "", out: list[str] | None = None, limit: int = 5) -> list[str]:
    """Paths where two JSON values differ (at most `limit`), e.g. `[3].by_type[2].macs: golden 1, now 2`."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(golden, dict) and isinstance(now, dict):
        for key in list(golden) + [k for k in now if k not in golden]:
            where = f"{path}.{key}" if path else str(key)
            if key not in now:
                out.append(f"{where}: missing now (golden {_short(golden[key])})")
            elif key not in golden:
                out.append(f"{where}: new key (now {_short(now[key])})")
            else:
                _first_differences(golden[key], now[key], where, out, limit)
            if len(out) >= limit:
                break
    elif isinstance(golden, list) and isinstance(now, list):
        for i, (g, n) in enumerate(zip(golden, now)):
            label = g.get("model", g.get("name")) if isinstance(g, dict) else None  # rows say whose they are
            _first_differences(g, n, f"{path}[{i}]" + (f"({label})" if isinstance(label, str) else ""), out, limit)
            if len(out) >= limit:
                break
        if len(golden) != len(now) and len(out) < limit:
            out.append(f"{path or '(top)'}: {len(golden)} items in golden, {len(now)} now")
    elif type(golden) is not type(now) or golden != now:
        out.append(f"{path or '(top)'}: golden {_short(golden)}, now {_short(now)}")
    return out


def _short(value, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _text_diff(golden: str, now: str, name: str, limit: int = 40) -> str:
    lines = list(difflib.unified_diff(golden.splitlines(), now.splitlines(), f"golden/{name}", "now", lineterm="", n=2))
    more = f"\n... {len(lines) - limit} more diff lines" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


@pytest.mark.parametrize("name, args", PARAMS)
def test_cli_output_matches_golden(name: str, args: list[str]):
    path = GOLDEN_DIR / name
    now = _run(args)
    if name.endswith(".json"):
        json.loads(now)  # the command must print valid JSON, even when only rewriting
    if UPDATE:
        path.write_text(now, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing; create it with CNNPROF_UPDATE_GOLDEN=1 (see this module's docstring)"
    golden = path.read_text(encoding="utf-8")
    command = "cnnprof " + " ".join(args)
    if name.endswith(".json"):
        diffs = _first_differences(json.loads(golden), json.loads(now))
        if diffs:
            pytest.fail(f"{command}: output differs from {name} (first differences):\n  " + "\n  ".join(diffs)
                        + HINT, pytrace=False)
    else:
        if now != golden:  # pytest.fail, not assert: pytest's own diff of two long strings would follow
            pytest.fail(f"{command}: output differs from {name}:\n{_text_diff(golden, now, name)}" + HINT,
                        pytrace=False)


def test_every_golden_file_has_a_case():
    """A renamed or dropped case must not leave a stale golden file that nothing checks."""
    names = {name for name, _ in CASES}
    assert len(names) == len(CASES), "two cases share a golden file name"
    assert SLOW <= names, f"SLOW names no case: {sorted(SLOW - names)}"
    on_disk = {p.name for p in GOLDEN_DIR.iterdir() if p.is_file()} - {PROFILE.name}
    if UPDATE:
        for stale in on_disk - names:
            (GOLDEN_DIR / stale).unlink()
        return
    assert on_disk <= names, f"golden files without a case in CASES: {sorted(on_disk - names)}"
