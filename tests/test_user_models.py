"""Models a user brings: several, named, dict and integer inputs, shared modules, constructors that cannot run
on meta, data-dependent ops, attention, 1-D/3-D and transposed convs. Each counted exactly (hand-derived
conv-scope MACs) through the CLI (`file.py:callable`) and the API."""
import copy
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import cnnprof

MODELS = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn

    print("importing user models")  # must not reach --format json stdout


    class TwoInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.fa, self.fb = nn.Linear(8, 4), nn.Linear(6, 4)

        def forward(self, a, b):
            return self.fa(a) + self.fb(b)


    class Kwargs(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x, mask=None):
            y = self.conv(x)
            return y if mask is None else y * mask


    class DictInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(5, 2)

        def example_inputs(self):
            return ({"image": torch.zeros(1, 3, 8, 8), "extra": torch.zeros(1, 5)},)

        def forward(self, batch):
            return self.conv(batch["image"]).flatten(1).sum(1, keepdim=True) + self.fc(batch["extra"])


    class Tokens(nn.Module):
        default_input_shape = "2,8:int64"

        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(100, 16), nn.Linear(16, 4)

        def forward(self, ids):
            return self.fc(self.emb(ids))


    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = self.a  # the same module under two names
            self.c = nn.Linear(8, 8, bias=False)
            self.c.weight = self.a.weight  # a tied parameter

        def forward(self, x):
            return self.c(self.b(self.a(x)))


    class MetaHostile(nn.Module):
        def __init__(self):
            super().__init__()
            print("building MetaHostile")
            self.conv = nn.Conv2d(3, 4, 3)
            self.scale = float(self.conv.weight.detach().abs().max())  # reads a value: impossible on meta

        def forward(self, x):
            return self.conv(x) * self.scale


    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            keep = torch.nonzero(x.sum(-1) >= 0).squeeze(1)  # every row, but only known from the values
            print("rows kept:", len(keep))
            return self.fc(x[keep])


    class Upsample(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.conv2(F.interpolate(self.conv1(x), scale_factor=2, mode="bilinear"))


    class Sdpa(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)


    class Mha(nn.Module):
        default_input_shape = (2, 10, 32)

        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x)[0]


    class Audio(nn.Module):
        default_input_shape = (1, 2, 16)

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 3)

        def forward(self, x):
            return self.conv(x)


    class Video(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(3, 2, 3)
            self.pretrained_cfg = {"input_size": (3, 4, 8, 8)}  # timm's convention (C, T, H, W)

        def forward(self, x):
            return self.conv(x)


    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 2, 3, stride=2)

        def forward(self, x):
            return self.up(x)


    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("my model is broken")
''')

CONV_3x3 = 4 * 3 * 9 * 6 * 6  # Conv2d(3, 4, 3) on 8x8: 4 x 27 weights per output x 6x6 outputs
# name -> (CLI input options, API inputs, hand-derived conv-scope MACs, how it was counted)
CASES = {
    "TwoInput": (["--input-shape", "2,8", "--input-shape", "2,6"], ((2, 8), (2, 6)), 2 * 8 * 4 + 2 * 6 * 4, "meta"),
    "Kwargs": (["--input", "x=1,3,8,8", "--input", "mask=1,1,6,6:bool"],
               {"x": (1, 3, 8, 8), "mask": "1,1,6,6:bool"}, CONV_3x3, "meta"),
    "DictInput": ([], ({"image": (1, 3, 8, 8), "extra": (1, 5)},), CONV_3x3 + 5 * 2, "meta"),
    "Tokens": ([], "2,8:int64", 2 * 8 * 16 * 4, "meta"),  # the embedding is a lookup: no MACs
    "Shared": (["--input-shape", "1,8"], (1, 8), 3 * 8 * 8, "meta"),  # one module called twice + a tied one
    "MetaHostile": (["--input-shape", "1,3,8,8"], (1, 3, 8, 8), CONV_3x3, "meta"),
    "DataDependent": (["--input-shape", "4,8"], (4, 8), 4 * 8 * 3, "cpu"),
    "Upsample": (["--input-shape", "1,3,8,8"], (1, 3, 8, 8), CONV_3x3 + 2 * 4 * 12 * 12, "meta"),
    # q @ k^T and attn @ v: 2 x batch 2 x heads 4 x 16 queries x 16 keys x 8 dims
    "Sdpa": (["--input-shape", "2,4,16,8"] * 3, ((2, 4, 16, 8),) * 3, 2 * 2 * 4 * 16 * 16 * 8, "meta"),
    # in-projection q, k, v (3 x 20 tokens x 32 x 32), scores and weighted sum (2 x 2 x 4 heads x 10 x 10 x 8),
    # out-projection (20 x 32 x 32)
    "Mha": ([], None, 3 * 20 * 32 * 32 + 2 * 2 * 4 * 10 * 10 * 8 + 20 * 32 * 32, "meta"),
    "Audio": ([], None, 4 * 2 * 3 * 14, "meta"),
    "Video": ([], None, 2 * 81 * 2 * 6 * 6, "meta"),  # 2 x 3x3x3x3 weights per output x 2x6x6 outputs
    # transposed: every input element meets C_out x k x k weights
    "Transposed": (["--input-shape", "1,4,5,5"], (1, 4, 5, 5), 4 * 25 * 2 * 9, "meta"),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "user_models.py"
    path.write_text(MODELS)
    return str(path)


@pytest.mark.parametrize("name", CASES)
def test_counted_exactly_through_cli_and_api(cli, models, name):
    options, inputs, macs, method = CASES[name]
    result = cli("flops", f"{models}:{name}", *options, "--format", "json")
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)[0]  # user prints went to stderr, stdout is pure JSON
    assert (row["macs"], row["method"]) == (macs, method)
    fc = cnnprof.count_flops(f"{models}:{name}", inputs=inputs)
    assert (fc.macs, fc.method) == (macs, method)
    assert cnnprof.count_flops(f"{models}:{name}", inputs=inputs, scope="all").macs >= macs


def test_inputs_are_reported_with_names_and_dtypes(cli, models):
    row = cli.json("flops", f"{models}:Kwargs", *CASES["Kwargs"][0])[0]
    assert row["inputs"] == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"},
                             {"name": "mask", "shape": [1, 1, 6, 6], "dtype": "bool"}]
    assert cnnprof.count_flops(f"{models}:Tokens").inputs[0].dtype == "int64"
    out = cli("flops", f"{models}:Tokens").stdout
    assert "inputs 2×8:int64" in out


def test_declared_inputs_and_resolution(cli, models):
    assert cli.json("flops", f"{models}:Video")[0]["input_shape"] == [1, 3, 4, 8, 8]  # from pretrained_cfg
    # --resolution scales every spatial dim of the declared input; video time stays
    assert cli.json("flops", f"{models}:Video", "--resolution", "16")[0]["macs"] == 2 * 81 * 2 * 14 * 14
    assert cli.json("flops", f"{models}:Audio", "--resolution", "32", "--batch-size", "2")[0]["macs"] == \
        2 * 4 * 2 * 3 * 30
    result = cli("flops", f"{models}:Tokens", "--resolution", "64")
    assert result.exit_code == 2 and "no spatial dimensions" in result.stderr


def test_missing_input_is_the_users_error_with_a_hint(cli, models):
    result = cli("flops", f"{models}:TwoInput", "--input-shape", "2,8")
    assert result.exit_code == 2
    assert "missing 1 required positional argument: 'b'" in result.stderr and "--input-shape" in result.stderr
    assert "internal error" not in result.stderr and "does not fit" not in result.stderr


def test_forward_that_raises_is_reported_as_the_models_own_error(cli, models):
    for command in ("flops", "compare"):
        args = [f"{models}:Broken"] * (2 if command == "compare" else 1)
        result = cli(command, *args, "--input-shape", "1,4")
        assert result.exit_code == 2, command
        assert "ValueError: my model is broken" in result.stderr and "internal error" not in result.stderr
        assert "does not fit" not in result.stderr and "Traceback" not in result.stderr


def test_shared_modules_counted_once_in_params_once_per_call_in_flops(cli, models):
    assert cli.json("params", f"{models}:Shared")[0]["params"] == 8 * 8 + 8
    assert cnnprof.count_params(f"{models}:Shared").total == 72
    built = cnnprof.build_model(f"{models}:Shared")
    fc = cnnprof.count_flops(built, (1, 8))
    assert fc.macs == 3 * 64
    assert sum(s.calls for s in fc.by_op()) == 3


def test_meta_hostile_constructor_falls_back_to_cpu_silently(cli, models):
    result = cli("params", f"{models}:MetaHostile", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["params"] == 4 * 27 + 4
    assert "error" not in result.stderr
    from cnnprof.models.spec import resolve

    with pytest.raises(RuntimeError, match="meta"), torch.device("meta"):  # it really cannot run on meta
        resolve(f"{models}:MetaHostile").factory()
    assert cnnprof.count_flops(f"{models}:MetaHostile", (1, 3, 8, 8)).method == "meta"  # counted via stand-ins


def test_built_cpu_model_is_counted_without_copying_or_running(monkeypatch):
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            seen.append(x.device.type)
            return self.conv(x)

    model = Spy().train()
    weight = model.conv.weight
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: pytest.fail("deep-copied the model"))
    fc = cnnprof.count_flops(model, inputs=torch.randn(1, 3, 8, 8))  # a CPU tensor: a meta stand-in is run
    assert fc.macs == CONV_3x3 and fc.method == "meta" and seen == ["meta"]
    assert model.conv.weight is weight and weight.device.type == "cpu" and model.training


def test_layer_shapes_in_by_layer_tables(cli, models):
    rows = cli.json("flops", f"{models}:Upsample", "--input-shape", "1,3,8,8", "--by", "layer")[0]["by_layer"]
    shapes = {r["name"]: (r["in_shape"], r["out_shape"]) for r in rows}
    assert shapes["conv1"] == ([1, 3, 8, 8], [1, 4, 6, 6]) and shapes["conv2"] == ([1, 4, 12, 12], [1, 2, 12, 12])
    assert shapes["(model)"] == ([1, 3, 8, 8], [1, 2, 12, 12])
    params = cli.json("params", f"{models}:Upsample", "--input-shape", "1,3,8,8", "--by", "layer")[0]["by_layer"]
    assert {r["name"]: r["out_shape"] for r in params}["conv2"] == [1, 2, 12, 12]
    out = cli("params", f"{models}:Upsample", "--input-shape", "1,3,8,8", "--by", "layer").stdout
    assert "Input" in out and "1×4×6×6" in out


def test_bench_takes_the_same_inputs(cli, models):
    rows = cli.json("bench", f"{models}:Kwargs", *CASES["Kwargs"][0], "--min-time", "0", "--warmup", "0",
                    "--min-runs", "1")
    assert rows[0]["status"] == "ok" and rows[0]["macs"] == CONV_3x3
    rows = cli.json("bench", f"{models}:Tokens", "--min-time", "0", "--warmup", "0", "--min-runs", "1")
    assert rows[0]["status"] == "ok" and rows[0]["input_shape"] == [1, 8]  # bench's --batch-size (default 1)


@pytest.mark.slow
def test_counting_does_not_import_dynamo():
    code = ("import sys; from typer.testing import CliRunner; from cnnprof.cli import app; "
            "runs = [['params', 'resnet50'], ['flops', 'resnet50', 'mobilenet_v3_large', 'efficientnet_b0'], "
            "['compare', 'resnet18', 'regnet_x_400mf']]; "
            "codes = [CliRunner().invoke(app, r).exit_code for r in runs]; "
            "print(codes, 'torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[0, 0, 0] False"


def test_fvcore_backend_builds_on_cpu_directly(cli, models):
    pytest.importorskip("fvcore")
    row = cli.json("flops", f"{models}:MetaHostile", "--backend", "fvcore", "--input-shape", "1,3,8,8")[0]
    assert (row["macs"], row["backend"]) == (CONV_3x3, "fvcore")
    rows = cli.json("flops", f"{models}:TwoInput", "--backend", "fvcore", *CASES["TwoInput"][0])
    assert rows[0]["macs"] == CASES["TwoInput"][2]
