"""Counting never changes a user's model: parameters, buffers, attributes, hooks, training flag, device and
class are as they were, and a real forward after counting gives exactly the output it gave before."""
import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

import cnnprof
from cnnprof.counting.source import ModuleSource
from cnnprof.inputs import make_inputs
from tests.test_user_models import CASES, models  # noqa: F401 - the fixture that writes the user models


class Anchors(nn.Module):
    """Caches tensors on the input's device in a plain attribute, as torchvision's AnchorGenerator does."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.cell_anchors = [torch.ones(4)]
        self.calls = 0
        self.seen = {}

    def forward(self, x):
        self.cell_anchors = [a.to(x.device) for a in self.cell_anchors]
        self.calls += 1
        self.seen[tuple(x.shape)] = x.device.type
        y = self.conv(x)
        return y * self.cell_anchors[0].view(1, 4, 1, 1)


class Lazy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.LazyLinear(5)

    def forward(self, x):
        return self.fc(x)


def outputs(model, inputs):
    """The model's real output on fixed inputs (seeded values) as a flat list of tensors."""
    args, kwargs = make_inputs(*ModuleSource(model).inputs(model, inputs), real=True, seed=0)
    with torch.no_grad():
        return [t for t in tree_flatten(model(*args, **kwargs))[0] if isinstance(t, torch.Tensor)]


def state(model):
    """Everything counting must not change, by identity where it can."""
    return [(name, type(m), m.training, dict(m.__dict__.get("_parameters", {})), dict(m._buffers),
             len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()]


def count_everything(model, inputs):
    cnnprof.count_flops(model, inputs=inputs)
    cnnprof.count_flops(model, inputs=inputs, scope="all")
    cnnprof.count_params(model)
    cnnprof.profile(model, inputs)


@pytest.mark.parametrize("name", CASES)
def test_user_models_give_the_same_output_after_counting(models, name):  # noqa: F811 - the imported fixture
    model = cnnprof.build_model(f"{models}:{name}").eval()
    inputs = CASES[name][1]
    before, was = outputs(model, inputs), state(model)
    count_everything(model, inputs)
    after = outputs(model, inputs)
    assert state(model) == was
    assert len(before) == len(after) and all(torch.equal(a, b) for a, b in zip(before, after))


def test_attributes_a_forward_sets_are_put_back():
    model = Anchors().eval()
    before = outputs(model, (1, 3, 8, 8))  # the model's own forward sets its attributes: take them after it
    anchors, seen, calls = model.cell_anchors, model.seen, model.calls
    count_everything(model, (1, 3, 8, 8))
    assert model.cell_anchors is anchors and model.cell_anchors[0].device.type == "cpu"  # not left on meta
    assert model.calls == calls and model.seen is seen and model.seen == {(1, 3, 8, 8): "cpu"}
    assert torch.equal(outputs(model, (1, 3, 8, 8))[0], before[0])


def test_an_uninitialised_lazy_module_is_refused_and_left_lazy():
    model = Lazy()
    with pytest.raises(cnnprof.errors.CnnprofError, match="lazy.*fc.*forward"):
        cnnprof.count_flops(model, (2, 7))
    with pytest.raises(cnnprof.errors.CnnprofError, match="lazy"):
        cnnprof.count_params(model)
    assert type(model.fc) is nn.LazyLinear and isinstance(model.fc.weight, nn.parameter.UninitializedParameter)
    assert outputs(model, (2, 7))[0].shape == (2, 5)  # initialised by its first real forward: now counted
    assert cnnprof.count_flops(model, (2, 7)).macs == 2 * 7 * 5


def test_a_training_model_stays_in_training():
    model = Anchors().train()
    cnnprof.count_flops(model, (1, 3, 8, 8))
    assert model.training and model.conv.training


def test_a_model_that_fails_is_put_back_too():
    class Fails(Anchors):
        def forward(self, x):
            super().forward(x)
            raise ValueError("boom")

    model = Fails()
    anchors = model.cell_anchors
    with pytest.raises(cnnprof.errors.CnnprofError, match="boom"):
        cnnprof.count_flops(model, (1, 3, 8, 8))
    assert model.cell_anchors is anchors and model.calls == 0 and model.seen == {}
