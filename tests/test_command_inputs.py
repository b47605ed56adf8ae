"""Every input, with its dtype, on every command that counts, predicts or runs a model (issue 19): a model whose
forward takes two tensors of different shapes and a token model on int64 ids, through compare --predict and
--bench, roofline, bench, and sweep / match with --predict and --bench; and one rule for --resolution (and
--batch-size) next to explicit inputs. Tiny models, hand-derived MACs: each command takes well under a second."""
import textwrap

import pytest

import cnnprof
from cnnprof.errors import CnnprofError

MODELS = textwrap.dedent('''
    from torch import nn


    class TwoInputs(nn.Module):
        """forward(src, tgt): src N x 5 x 16 and tgt N x 3 x 4, each through its own linear layer."""

        def __init__(self, width=8):
            super().__init__()
            self.a, self.b = nn.Linear(16, width), nn.Linear(4, width)

        def forward(self, src, tgt):
            return self.a(src).sum(1) + self.b(tgt).sum(1)


    class Tokens(nn.Module):
        """Token ids through an embedding (a free lookup) and a linear layer; declares its int64 input."""

        default_input_shape = "1,32:int64"

        def __init__(self, width=8):
            super().__init__()
            self.emb, self.fc = nn.Embedding(100, width), nn.Linear(width, 10)

        def forward(self, ids):
            return self.fc(self.emb(ids))


    def two(width=8):
        return TwoInputs(width)


    def tokens(width=8):
        return Tokens(width)
''')

TWO_INPUTS = ["--input-shape", "2,5,16", "--input-shape", "2,3,4"]
TOKEN_IDS = ["--input-shape", "1,32:int64"]
# The 10 (2 x 5) rows of src meet 16 x width weights, the 6 rows of tgt 4 x width; 32 ids meet width x 10.
CASES = {"two": (TWO_INPUTS, lambda w: (2 * 5 * 16 + 2 * 3 * 4) * w),
         "tokens": (TOKEN_IDS, lambda w: 32 * w * 10)}
QUICK_BENCH = ["--min-time", "0.05", "--warmup", "0", "--min-runs", "2"]
H100 = ["--device-spec", "h100"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "nets.py"
    path.write_text(MODELS)
    return str(path)


def predicted_ms(model: str, options: list[str]) -> float:
    """The prediction of the library on the same inputs (every one of them, with its dtype)."""
    from cnnprof.inputs import parse_inputs
    from cnnprof.predict.device import datasheet
    from cnnprof.predict.latency import predict_latency

    specs = parse_inputs([v for k, v in zip(options, options[1:]) if k == "--input-shape"], None)
    return 1e3 * predict_latency(model, None, datasheet("h100"), inputs=list(specs)).best_s()


@pytest.mark.parametrize("name", CASES)
def test_compare_predicts_from_all_inputs(cli, models, name):
    options, macs = CASES[name]
    rows = cli.json("compare", f"{models}:{name}", f"{models}:{name}@width=4", *options, "--predict", *H100)
    assert [r["macs"] for r in rows] == [macs(8), macs(4)]
    assert all(r["uncounted_ops"] == {} for r in rows)  # the embedding is a lookup, not an uncounted op
    assert rows[0]["predicted_ms"] == pytest.approx(predicted_ms(f"{models}:{name}", options))


@pytest.mark.parametrize("name", CASES)
def test_compare_benches_on_all_inputs(cli, models, name):
    options, macs = CASES[name]
    rows = cli.json("compare", f"{models}:{name}", f"{models}:{name}@width=4", *options, "--bench", *QUICK_BENCH)
    assert [(r["macs"], r["bench_status"]) for r in rows] == [(macs(8), "ok"), (macs(4), "ok")]
    assert all(r["latency_ms"] > 0 for r in rows)


@pytest.mark.parametrize("name", CASES)
def test_roofline_places_every_input(cli, models, name):
    options, macs = CASES[name]
    row = cli.json("roofline", f"{models}:{name}", *options, *H100, "--by", "type")[0]
    # h100 is a datasheet GPU: its best prediction is the GPU efficiency model's (the calibrated column)
    assert row["macs"] == macs(8) and row["calibrated_ms"] == pytest.approx(predicted_ms(f"{models}:{name}", options))


@pytest.mark.parametrize("name", CASES)
def test_bench_runs_on_every_input(cli, models, name):
    options, macs = CASES[name]
    row = cli.json("bench", f"{models}:{name}", *options, *QUICK_BENCH)[0]
    first = [int(d) for d in options[1].split(":")[0].split(",")]
    assert (row["status"], row["macs"], row["input_shape"]) == ("ok", macs(8), first)


@pytest.mark.parametrize("name", CASES)
def test_sweep_and_match_predict_on_all_inputs(cli, models, name):
    options, macs = CASES[name]
    rows = cli.json("sweep", f"{models}:{name}", "--set", "width=4,8", *options, "--predict", *H100)
    assert [(r["status"], r["macs"]) for r in rows] == [("ok", macs(4)), ("ok", macs(8))]
    assert rows[1]["latency_ms"] == pytest.approx(predicted_ms(f"{models}:{name}", options))
    found = cli.json("match", f"{models}:{name}", "--vary", "width", "--target", str(macs(16)), "--range", "1:64",
                     *options, "--predict", *H100)[0]
    assert (found["width"], found["macs"]) == (16, macs(16)) and found["latency_ms"] > 0


@pytest.mark.parametrize("name", CASES)
def test_sweep_benches_on_all_inputs(cli, models, name):
    options, macs = CASES[name]
    rows = cli.json("sweep", f"{models}:{name}", "--set", "width=4", *options, "--bench", "--min-time", "0.05")
    assert (rows[0]["status"], rows[0]["macs"]) == ("ok", macs(4)) and rows[0]["latency_ms"] > 0


def test_design_points_use_the_declared_dtype(cli, models):
    """Without --input-shape a point runs on the declared input, int64 ids included (it used to be float)."""
    rows = cli.json("sweep", f"{models}:tokens", "--set", "width=4,8", "--predict", *H100)
    assert [(r["status"], r["macs"]) for r in rows] == [("ok", 32 * 4 * 10), ("ok", 32 * 8 * 10)]
    out = cli("sweep", f"{models}:tokens", "--set", "width=4", "--predict", *H100).stdout
    assert "Latency (ms)" in out and "Latency: predicted on NVIDIA H100" in out  # the table shows the prediction


RESOLUTION_ERROR = "--resolution has no effect with --input-shape / --input (their shapes are used as given)"
BATCH_ERROR = "--batch-size has no effect with --input-shape / --input (their first dimension is the batch)"


@pytest.mark.parametrize("command", ["flops", "compare", "roofline", "bench", "sweep", "match", "search"])
def test_resolution_with_explicit_inputs_is_an_error_on_every_command(cli, models, command):
    model = f"{models}:tokens"
    args = {"compare": [model, model], "match": [model, "--vary", "width", "--target", "1k"],
            "search": ["--space", "regnet"], "sweep": [model, "--set", "width=4"]}.get(command, [model])
    result = cli(command, *args, *TOKEN_IDS, "--resolution", "64")
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {RESOLUTION_ERROR}"
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["flops", "compare", "roofline", "sweep"])
def test_batch_size_with_explicit_inputs_is_an_error(cli, models, command):
    model = f"{models}:tokens"
    args = {"compare": [model, model], "sweep": [model, "--set", "width=4"]}.get(command, [model])
    result = cli(command, *args, *TOKEN_IDS, "--batch-size", "2")
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {BATCH_ERROR}"


def test_resolution_still_scales_the_declared_input(cli):
    assert cli.json("compare", "resnet18", "mobilenet_v2", "--resolution", "112")[0]["input_shape"] == [1, 3, 112, 112]
    assert cli.json("roofline", "resnet18", "--resolution", "112", *H100)[0]["input_shape"] == [1, 3, 112, 112]


def test_the_api_has_the_same_rule(models):
    with pytest.raises(CnnprofError, match="`resolution` has no effect with `input_shape` / `inputs`"):
        cnnprof.profile(f"{models}:tokens", inputs="1,32:int64", resolution=64)
    with pytest.raises(CnnprofError, match="`resolution` has no effect"):
        cnnprof.compare([f"{models}:two", f"{models}:two"], inputs=((2, 5, 16), (2, 3, 4)), resolution=64)


@pytest.mark.parametrize("name", CASES)
def test_bench_breakdown_predicts_on_the_inputs_it_timed(cli, models, name):
    from cnnprof.predict.device import DeviceProfile, save_profile

    save_profile(DeviceProfile(device="cpu", name="fixed test CPU", torch_version="x", threads=1, source="file",
                               peak_flops={"float32": 100e9}, bandwidth=10e9, op_overhead_s=5e-6))
    options, macs = CASES[name]
    row = cli.json("bench", f"{models}:{name}", *options, *QUICK_BENCH, "--breakdown")[0]
    linear = {p["type"]: p for p in row["breakdown"]}["linear"]
    assert (row["status"], linear["macs"]) == ("ok", macs(8)) and linear["predicted_ms"] > 0


def test_one_trace_gives_the_counts_and_the_prediction(models, monkeypatch):
    """compare --predict (profile()) and every design point trace the model once, on every input."""
    from cnnprof.counting import run
    from cnnprof.design.metrics import Settings, evaluate
    from cnnprof.inputs import parse_inputs
    from cnnprof.predict.device import datasheet

    traced = []
    original = run.trace_model
    monkeypatch.setattr(run, "trace_model", lambda *a, **k: traced.append(1) or original(*a, **k))
    specs = parse_inputs(TWO_INPUTS[1::2], None)
    p = cnnprof.profile(f"{models}:two", inputs=specs, device_profile=datasheet("h100"))
    assert traced == [1] and p.prediction.best_s() > 0 and p.flops.inputs == specs
    point = evaluate(f"{models}:two", {"width": 4}, Settings(inputs=specs, profile=datasheet("h100")))
    assert traced == [1, 1] and (point.macs, point.latency_s > 0) == (184 * 4, True)
