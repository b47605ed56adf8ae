"""Model specs: zoo names, YAML paths and module:callable, with their errors."""
import sys
import textwrap

import pytest
from torch import nn

import cnnprof
from cnnprof.errors import ModelSpecError


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelSpecError, match=r"unknown model 'resnt50'.*did you mean resnet50"):
        cnnprof.build_model("resnt50")


def test_file_callable(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(textwrap.dedent("""
        from torch import nn
        def make(width=8):
            return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU())
        NOT_A_MODEL = 3
        def not_module():
            return 42
        def needs_arg(x):
            return nn.Identity()
    """))
    assert cnnprof.count_params(f"{path}:make").total == 3 * 8 * 9 + 8
    assert cnnprof.count_params(cnnprof.build_model(f"{path}:make", width=4)).total == 3 * 4 * 9 + 4
    assert cnnprof.count_flops(f"{path}:make", (1, 3, 10, 10)).macs == 8 * 27 * 64
    with pytest.raises(ModelSpecError, match="has no attribute 'missing'"):
        cnnprof.build_model(f"{path}:missing")
    with pytest.raises(ModelSpecError, match="NOT_A_MODEL is not callable"):
        cnnprof.build_model(f"{path}:NOT_A_MODEL")
    with pytest.raises(ModelSpecError, match="returned int, not a torch.nn.Module"):
        cnnprof.build_model(f"{path}:not_module")
    with pytest.raises(ModelSpecError, match="must take no required arguments"):
        cnnprof.build_model(f"{path}:needs_arg")


def test_module_callable_and_import_errors(tmp_path, monkeypatch):
    (tmp_path / "user_pkg_ok.py").write_text("from torch import nn\nNet = lambda: nn.Linear(4, 2)\n")
    (tmp_path / "user_pkg_bad.py").write_text("raise ImportError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cnnprof.count_params("user_pkg_ok:Net").total == 10
    with pytest.raises(ModelSpecError, match="cannot import user_pkg_bad: ImportError: boom"):
        cnnprof.build_model("user_pkg_bad:Net")
    with pytest.raises(ModelSpecError, match="cannot import no_such_pkg_xyz: ModuleNotFoundError"):
        cnnprof.build_model("no_such_pkg_xyz:Net")
    with pytest.raises(ModelSpecError, match="no such file"):
        cnnprof.build_model(str(tmp_path / "nope.py") + ":Net")
    sys.modules.pop("user_pkg_ok", None)


def test_built_module_is_accepted_and_not_modified():
    model = nn.Conv2d(3, 4, 3)
    fc = cnnprof.count_flops(model, (1, 3, 8, 8))
    assert fc.macs == 4 * 27 * 36
    assert model.weight.device.type == "cpu"  # counted on a meta copy


def test_build_model_on_meta_allocates_nothing():
    model = cnnprof.build_model("vgg16", device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert not model.training


def test_value_dependent_model_is_counted_by_a_real_cpu_run_and_says_so(tmp_path, cli):
    path = tmp_path / "valuey.py"
    path.write_text("import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                    "        self.fc = torch.nn.Linear(4, 3)\n    def forward(self, x):\n"
                    "        return self.fc(x) if x.sum().item() > 0 else x\n")
    row = cli.json("flops", f"{path}:Net", "--input-shape", "2,4")[0]
    assert (row["macs"], row["method"]) == (2 * 4 * 3, "cpu")  # inputs are uniform in [0, 1): sum > 0
    result = cli("flops", f"{path}:Net", "--input-shape", "2,4")
    assert result.exit_code == 0 and "real forward pass on the CPU" in result.stdout
