"""Mutations of zoo configs, block arguments, `--set` values, device profile files (`--device-spec`), design
spaces (`search --space`) and per-model settings and labels (`MODEL@key=value,label=NAME`, CSV output), shared by
tests/test_fuzz.py and the larger local fuzz (`python -m tests.fuzzing --cases 4000`), which counts failures by
kind instead of stopping at the first.

A case passes when it gives a result or a one-line CnnprofError (the CLI's exit 2) within its time bound;
any other exception (the CLI's exit 1 "internal error"), a multi-line message or a timeout fails it.
"""
from __future__ import annotations

import json
import random
import re
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from cnnprof.models.config import materialize
from cnnprof.models.zoo import CONFIG_DIR

ZOO_FILES = sorted(CONFIG_DIR.glob("*.yaml"))
SMALL = ["mobilenet_v3_small", "shufflenet_v2_x0_5", "resnet18", "regnet_x_400mf", "mnasnet1_0", "alexnet"]

HUGE = 10**400  # an integer YAML and JSON read exactly, beyond float range: float(HUGE) raises OverflowError
# Odd values: type swaps, edge numbers, non-finite, huge, strings that look like other types, containers.
ODD_VALUES = [
    0, -1, -0.25, 0.5, 1.5, 2.0, 3, 7, 10**6, 10**12, 10**30, 1e300, HUGE, -HUGE,
    float("nan"), float("inf"), float("-inf"), True, False, "false", "true", "abc", "", None,
    [], {}, [1, 2], {"a": 1}, "$nope", "$width_mult", {"by": {"x": 1}, "cases": {}},
    {"by": "width_mult", "cases": {1.0: 5}}, {"by": [], "cases": []}, {1: "a", "b": 2},
]
# `--set` values as a user types them.
SET_VALUES = ["1e-1", "0.5e0", "nan", "inf", "-inf", "-1", "0", "1e400", "100000", "3", "0.5", "true", "yes",
              "no", "off", "abc", "[1, 2]", "{a: 1}", "", "~", "0x10", "1_000", "!!float x", "&a [*a]", "2.",
              ".5", "1/2", "9" * 40, "9" * 400, "-9" * 400, "-0", "1e-400", "relu", "'quoted'"]
SET_KEYS = ["width_mult", "depth_mult", "resolution", "num_classes", "in_channels", "width_divisor", "groups",
            "bottleneck_ratio", "se_ratio", "stride_in_1x1", "activation", "stages.0.depth", "stages.1.out_channels",
            "stages.0.stride", "stem.out_channels", "stem.kernel_size", "stem.padding", "head.dropout",
            "stages.0.blocks.0.out_channels", "nosuch", "stages.x.depth", "stages.-1.depth", "stages", "head"]
TEXT_CASES = [
    "stages: {1: a, '1': b, 1.5: c}\nhead: {}\n",  # mixed-type keys
    "params: {width_mult: !!float x}\nstages: []\nhead: {}\n",
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
    "stages: [{block: basic, depth: 1, out_channels: 8, x: *h}]\nhead: {}\n",  # billion laughs
    "stages: " + "[" * 600 + "]" * 600 + "\nhead: {}\n",
    "stages: " + "[" * 999 + "]" * 999 + "\nhead: {}\n",
    "stages: " + "{a: " * 700 + "1" + "}" * 700 + "\nhead: {}\n",
    "params: &p {width_mult: 1.0, me: *p}\n",
    "? [a, b]\n: 1\nstages: []\nhead: {}\n",
    "stages:\n  - {block: basic, depth: 1, out_channels: 8}\nhead: {pool: avg}\nhead: {pool: max}\n",
]


SPACE_FILES = sorted((CONFIG_DIR / "spaces").glob("*.yaml"))
PROFILE_FILE = Path(__file__).parent / "golden_cli" / "fixed_cpu_profile.json"
# Every command that reads a --device-spec file (resnet18 / mobilenet_v1 at a small resolution: cheap to count).
DEVICE_COMMANDS = [
    ["roofline", "resnet18", "--resolution", "32", "--by", "type"],
    ["compare", "resnet18", "--predict", "--resolution", "32"],
    ["device"],
    ["sweep", "mobilenet_v1", "--set", "width_mult=0.5,1", "--set", "resolution=32", "--predict"],
    ["match", "mobilenet_v1", "--target", "1ms", "--vary", "width_mult", "--set", "resolution=32"],
]
# Knob names a space may give: params, dotted paths into lists and mappings, ones that lead nowhere.
KNOB_NAMES = ["depth", "w_0", "width_mult", "resolution", "stages.1.depth", "stages.99.depth", "stages.-1.depth",
              "stages..depth", "stages.0", "stages", "head.pool", "stem.out_channels", "name", "", ".", "1",
              "stages.1.blocks.0.x", "params.width_mult", "nosuch.deep.path"]
KNOB_FIELDS = ["type", "low", "high", "step", "log", "choices", "multiply", "divisor", "extra"]
SPACE_BASES = ["mobilenet_v2", "regnet_x_400mf", "nosuch", "../../etc/passwd", "/dev/zero", "/tmp", "SELF", "", None,
               3, ["a"], "mobilenet_v2.yaml", str(CONFIG_DIR / "spaces" / "regnet.yaml")]
# Label and setting texts: separators of the MODEL@ syntax, spreadsheet formula starts, controls, markup, bidi.
LABEL_TEXTS = ["", "x", "a,b", "a=b", "@", "=1+2", "+1", "-1", "-1.5", "@SUM(A1)", "\n", "x\ny", "\r", "a\rb", "\t",
               "\x00", "\x1b[31m", "[bold]x[/]", "\u202e", "é", "🙂", "'q'", '"q"', " ", "a" * 300, ",label=z",
               "x,width_mult=0.5", "x@y=z", "nan", "0.5"]
SETTING_KEYS = ["label", "width_mult", "resolution", "depth_mult", "nosuch", "", " ", "label ", "LABEL", "stages.0.depth"]


class CaseTimeout(Exception):
    pass


@contextmanager
def deadline(seconds: float):
    """Raise CaseTimeout after `seconds` (main thread, POSIX only)."""
    def on_alarm(*_):
        raise CaseTimeout(f"no result within {seconds}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _paths(node, prefix=()):
    """Every (path) into a nested dict/list, containers included."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def mutate(raw: dict, rng: random.Random, rounds: int = 1) -> dict:
    """A copy of a parsed config with `rounds` random mutations (replace, delete, add, wrap, nest)."""
    import copy

    raw = copy.deepcopy(raw)
    for _ in range(rounds):
        paths = [p for p in _paths(raw) if p]
        path = rng.choice(paths)
        parent = raw
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        op = rng.choice(["replace", "replace", "replace", "delete", "add", "wrap", "nest", "scale"])
        value = copy.deepcopy(rng.choice(ODD_VALUES))
        if op == "replace":
            parent[last] = value
        elif op == "delete":
            del parent[last]
        elif op == "add" and isinstance(parent, dict):
            parent[rng.choice(["kernel_size", "padding", "groups", "bias", "se_ratio", "se_divisor", "group_width",
                               "expand_ratio", "stride", "depth", "colour", "pool", "norm"])] = value
        elif op == "wrap":
            parent[last] = [parent[last]] if rng.random() < 0.5 else {"by": "width_mult", "cases": {1.0: parent[last]}}
        elif op == "nest":  # a placeholder that dump() turns into flow-style brackets (PyYAML recurses)
            parent[last] = f"NEST{rng.choice([50, 300, 700, 999])}"
        elif op == "scale" and isinstance(parent[last], (int, float)) and not isinstance(parent[last], bool):
            parent[last] = parent[last] * rng.choice([-1, 0, 1000, 10**9, 0.001])
    return raw


def dump(raw) -> str:
    """YAML text of a mutated config (deep nests are emitted in flow style by PyYAML)."""
    text = yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=10**9)
    return re.sub(r"NEST(\d+)", lambda m: "[" * int(m[1]) + "1" + "]" * int(m[1]), text)


def block_arg_cases() -> list[tuple[str, str, object]]:
    """(block, argument, odd value) for every registered block argument."""
    from cnnprof.models.blocks import BLOCKS, block_arguments

    return [(name, arg, value) for name, cls in sorted(BLOCKS.items()) for arg in sorted(block_arguments(cls))
            for value in ODD_VALUES]


def block_case_config(block: str, arg: str, value) -> dict:
    """A one-stage config putting `arg: value` on `block` (channels chosen to suit every block)."""
    return {"name": f"{block}_{arg}", "stem": {"out_channels": 24},
            "stages": [{"block": block, "depth": 2, "out_channels": 48, "stride": 2, arg: value}],
            "head": {"pool": "avg"}, "params": {"resolution": 32}}


def run_config(raw_or_text, overrides=None, tmp: Path | None = None) -> str:
    """Load, build on meta and count a config; returns 'ok' or 'error' (one-line CnnprofError)."""
    from cnnprof.counting.flops import count_flops
    from cnnprof.counting.params import count_params
    from cnnprof.models.config import load_config
    from cnnprof.errors import CnnprofError
    from cnnprof.models.spec import ModelSource

    try:
        if isinstance(raw_or_text, str):
            path = (tmp or Path("/tmp")) / "fuzz_case.yaml"
            path.write_text(raw_or_text)
            config = load_config(path, overrides or {})
        else:
            config = materialize(raw_or_text, overrides or {}, source="fuzz.yaml")
        source = ModelSource(label=config.name, config=config)
        model = source.build("meta")
        count_params(model)
        shape = (1, *config.input_shape[1:2], *[min(d, 64) for d in config.input_shape[2:]])
        count_flops(source, shape)
        return "ok"
    except CnnprofError as exc:
        if "\n" in str(exc) or len(str(exc)) > 500:
            raise AssertionError(f"error message not one short line: {str(exc)[:300]!r}") from None
        return "error"


def run_cli(runner, app, cmd: str, model: str, setting: str) -> int:
    """`cnnprof CMD MODEL --set SETTING`: exit 0, or exit 2 with exactly one line on stderr."""
    extra = ["--resolution", "64"] if cmd == "flops" else []
    res = runner.invoke(app, [cmd, model, "--set", setting, *extra])
    if res.exit_code not in (0, 2) or (res.exit_code == 2 and len(res.stderr.strip().splitlines()) != 1):
        raise AssertionError(f"exit {res.exit_code}: {res.stderr.strip()[:120]}")
    return res.exit_code


def corrupt_profile(text: str, rng: random.Random) -> str:
    """A device profile's JSON text, corrupted: truncated, a byte swapped, a literal or huge number inserted, numbers
    replaced, wrapped, a key duplicated, a BOM, deep nesting, or the whole text as one JSON string."""
    op = rng.choice(["truncate", "byte", "insert", "numbers", "wrap", "duplicate", "bom", "deep", "string"])
    i = rng.randrange(len(text))
    if op == "truncate":
        return text[:i]
    if op == "byte":
        return text[:i] + rng.choice(["\x00", "}", "{", '"', "\\", "\xff", "9", "\ud800"]) + text[i + 1:]
    if op == "insert":
        return text[:i] + rng.choice(["NaN", "Infinity", "-0", "1e999", str(HUGE), "null", "[]", "{}"]) + text[i:]
    if op == "numbers":
        odd = ["1e999", "-1", "0", "NaN", "1e-999", '"1"', "true", str(HUGE), "5e-324", "1e308", "[1]"]
        return re.sub(r"-?\d+(\.\d+)?(e[+-]?\d+)?", lambda m: rng.choice([m[0], *odd]), text)
    if op == "wrap":
        return rng.choice(["[", '{"a": ', "[[", "["]) + text + rng.choice(["]", "}", "]]", ", 1]"])
    if op == "duplicate":
        key = rng.choice(['"bandwidth"', '"peak_flops"', '"device"', '"calibration"'])
        return text.replace(key, f'{key}: {rng.choice(["1", "null", "[]", "-5"])}, {key}', 1)
    if op == "bom":
        return "\ufeff" + text
    if op == "deep":
        return "[" * 100_000 + "]" * 100_000
    return json.dumps(text)


def mutate_space(raw: dict, rng: random.Random, rounds: int = 1) -> dict:
    """A copy of a parsed design space with `rounds` mutations aimed at its fields and knobs (see `mutate` for
    mutations anywhere); a `base` of "SELF" is the space file itself (write_space fills it in)."""
    import copy

    raw = copy.deepcopy(raw)
    for _ in range(rounds):
        knobs = raw.get("knobs")
        roll = rng.random()
        if roll < 0.15:
            raw["base"] = copy.deepcopy(rng.choice(SPACE_BASES))
        elif roll < 0.25:
            raw[rng.choice(["name", "description", "knobs", "extra"])] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif roll < 0.45 and isinstance(knobs, dict):
            knobs[rng.choice(KNOB_NAMES)] = copy.deepcopy(rng.choice(list(knobs.values()) or [{}]))
        elif isinstance(knobs, dict) and knobs:
            name = rng.choice(list(knobs))
            if not isinstance(knobs[name], dict) or rng.random() < 0.1:
                knobs[name] = copy.deepcopy(rng.choice(ODD_VALUES))
                continue
            field = rng.choice(KNOB_FIELDS)
            odd = [[0.5, HUGE], [[1]], [{}], [None], list(range(300)), ["relu", "x"], [True, False], [1, 1.0]]
            values = ["int", "float", "categorical", "bool", ""] if field == "type" else ODD_VALUES + odd
            knobs[name][field] = copy.deepcopy(rng.choice(values))
    return raw


def write_space(raw: dict, path: Path) -> Path:
    """Write a (mutated) space to `path`; a base of "SELF" names the file itself."""
    path.write_text(dump(raw).replace("SELF", str(path)))
    return path


def model_arg(model: str, pairs: list[tuple[str, str]], at: str = "@") -> str:
    """`MODEL@key=value,...` as a user types it (`at`: "@", or an odd joint such as "@@" or " @")."""
    return model + at + ",".join(f"{k}={v}" for k, v in pairs) if pairs else model


def run_args(runner, app, args: list[str]):
    """Run the CLI in-process: exit 0, or exit 2 with one line per failed model (plus a `wrote FILE` note), never
    an internal error or a traceback. Returns the result."""
    res = runner.invoke(app, args)
    lines = res.stderr.strip().splitlines()
    errors = [line for line in lines if not line.startswith("wrote ")]
    models = max(1, sum(1 for a in args if "@" in a or a in SMALL or a in ("resnet18", "mobilenet_v1", "mobilenet_v2")))
    if (res.exit_code not in (0, 2) or "Traceback" in res.stderr or "internal error" in res.stderr
            or (res.exit_code == 2 and not 1 <= len(errors) <= models)):
        raise AssertionError(f"exit {res.exit_code}: {res.stderr.strip()[-300:]} ({res.exception!r})")
    return res


def _kind(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:90] if str(exc) else ''}"


def main(cases: int, seed: int, seconds: float) -> None:
    """Run `cases` config mutations, every block-argument case and every --set case; print failure counts."""
    import collections
    import tempfile

    from typer.testing import CliRunner

    from cnnprof.counting.flops import count_flops  # noqa: F401 - import torch before any case's alarm
    from cnnprof.cli import app
    from cnnprof.models import builder  # noqa: F401

    rng = random.Random(seed)
    raws = {p.stem: yaml.safe_load(p.read_text()) for p in ZOO_FILES}
    tmp = Path(tempfile.mkdtemp())
    fails: dict[str, collections.Counter] = {k: collections.Counter() for k in ("config", "text", "block", "set",
                                                                                 "profile", "space", "label")}
    totals = collections.Counter()

    def check(group, fn):
        totals[group] += 1
        try:
            with deadline(seconds):
                fn()
        except Exception as exc:  # noqa: BLE001 - counting every kind of failure
            fails[group][_kind(exc)] += 1

    t0 = time.time()
    for i in range(cases):
        name = rng.choice(sorted(raws))
        raw = mutate(raws[name], rng, rounds=rng.choice([1, 1, 2, 3]))
        check("config", lambda: run_config(dump(raw), tmp=tmp))
    report(fails, totals, "config")
    for text in TEXT_CASES:
        check("text", lambda: run_config(text, tmp=tmp))
    report(fails, totals, "text")
    for block, arg, value in block_arg_cases():
        check("block", lambda: run_config(block_case_config(block, arg, value)))
    report(fails, totals, "block")
    runner = CliRunner()
    for key in SET_KEYS:
        for value in SET_VALUES:
            model, cmd = rng.choice(SMALL), rng.choice(["params", "flops"])
            check("set", lambda: run_cli(runner, app, cmd, model, f"{key}={value}"))
    report(fails, totals, "set")
    _file_groups(check, rng, tmp, runner, app, max(1, cases // 10))
    report(fails, totals, "profile", "space", "label")
    print(f"{time.time() - t0:.0f} s")


def _file_groups(check, rng: random.Random, tmp: Path, runner, app, cases: int) -> None:
    """`cases` corrupted device profiles, mutated design spaces and odd per-model settings and labels."""
    text = PROFILE_FILE.read_text()
    spaces = {p.stem: yaml.safe_load(p.read_text()) for p in SPACE_FILES}
    for i in range(cases):
        spec = tmp / f"p{i}.json"
        spec.write_bytes(corrupt_profile(text, rng).encode("utf-8", "surrogatepass"))
        check("profile", lambda: run_args(runner, app, [*rng.choice(DEVICE_COMMANDS), "--device-spec", str(spec)]))
        space = write_space(mutate_space(spaces[rng.choice(sorted(spaces))], rng, rng.choice([1, 2, 3])),
                            tmp / f"s{i}.yaml")
        check("space", lambda: run_args(runner, app, ["search", "--space", str(space), "--trials", "2", "--workers",
                                                      "1", "--minimize", "macs", "--resolution", "32", "--out",
                                                      str(tmp / f"o{i}")]))
        pairs = [(rng.choice(SETTING_KEYS), rng.choice(LABEL_TEXTS)) for _ in range(rng.choice([0, 1, 2]))]
        arg = model_arg(rng.choice(["mobilenet_v1", "resnet18"]), [("label", rng.choice(LABEL_TEXTS)), *pairs])
        check("label", lambda: run_args(runner, app, ["params", arg, "--format", rng.choice(["csv", "json"])]))


def report(fails, totals, *groups) -> None:
    """Print failure counts by kind for the given groups (as each group finishes: a long run keeps them)."""
    for group in groups:
        counter = fails[group]
        print(f"{group}: {sum(counter.values())} of {totals[group]} cases failed", flush=True)
        for kind, n in counter.most_common(25):
            print(f"    {n:5d}  {kind}", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    main(args.cases, args.seed, args.seconds)
