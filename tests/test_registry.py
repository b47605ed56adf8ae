"""The public formula registry: user ops (torch.library), name checks, replacement, per-call overrides and
the named arguments a formula receives."""
import pytest
import torch
from torch import nn

import cnnprof
from cnnprof.counting.formulas import FORMULAS, lookup, resolve_formulas
from cnnprof.counting.registry import Registered

aten = torch.ops.aten

# A tiny op of our own, as a user would define one: a CPU kernel and a meta kernel (counting runs on meta).
LIB = torch.library.Library("cnnprof_test", "DEF")
LIB.define("myop(Tensor x, float scale=2.0) -> Tensor")
LIB.impl("myop", lambda x, scale=2.0: x * scale, "CPU")
LIB.impl("myop", lambda x, scale=2.0: torch.empty_like(x), "Meta")
myop = torch.ops.cnnprof_test.myop


class UsesMyop(nn.Module):
    """A 1x1 conv (4 -> 4 channels), then myop on its 1x4x5x5 output, with or without `scale`."""

    def __init__(self, scale=None):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.scale = scale

    def forward(self, x):
        y = self.conv(x)
        return myop(y) if self.scale is None else myop(y, self.scale)


CONV_MACS = 4 * 4 * 5 * 5  # 25 positions x 4 outputs x 4 inputs


@pytest.fixture
def restore_registry():
    """Put the registry back as it was, through the public API only."""
    before = cnnprof.formulas()
    yield
    after = cnnprof.formulas()
    for key in after.keys() - before.keys():
        cnnprof.unregister_formula(key)
    for key, entry in before.items():
        if after.get(key) != entry:
            cnnprof.register_formula(key, entry.formula, scope=entry.scope, replace=True)
    assert cnnprof.formulas() == before


def test_a_user_op_is_uncounted_until_it_has_a_formula(restore_registry):
    fc = cnnprof.count_flops(UsesMyop(), (1, 4, 5, 5), scope="all")
    assert dict(fc.uncounted) == {"myop": 1} and fc.macs == CONV_MACS

    @cnnprof.register_formula(myop)
    def myop_cost(x, scale, *, out):
        return cnnprof.Cost("custom", 0, 2 * out.numel())  # a multiply and a round per element, say

    assert myop_cost.__name__ == "myop_cost"  # the decorator returns the function
    fc = cnnprof.count_flops(UsesMyop(), (1, 4, 5, 5), scope="all")
    assert fc.uncounted == ()
    assert {s.name: (s.macs, s.ops) for s in fc.by_type()} == {"pointwise conv": (CONV_MACS, 0),
                                                                "custom": (0, 2 * 100)}
    assert cnnprof.count_flops(UsesMyop(), (1, 4, 5, 5), scope="conv").macs == CONV_MACS  # an "all" formula


def test_formulas_receive_named_arguments_with_schema_defaults(restore_registry):
    seen = []

    def myop_cost(x, scale, *, out):
        seen.append((tuple(x.shape), x.device.type, scale, tuple(out.shape)))
        return cnnprof.Cost("custom", 0, 0)

    cnnprof.register_formula(myop, myop_cost)
    cnnprof.count_flops(UsesMyop(scale=3.0), (1, 4, 5, 5))
    cnnprof.count_flops(UsesMyop(), (1, 4, 5, 5))  # scale left out: the schema's default, 2.0
    assert seen == [((1, 4, 5, 5), "meta", 3.0, (1, 4, 5, 5)), ((1, 4, 5, 5), "meta", 2.0, (1, 4, 5, 5))]


def test_a_string_key_names_an_op_of_any_namespace(restore_registry):
    cnnprof.register_formula("cnnprof_test::myop", lambda x, scale, *, out: cnnprof.Cost("custom", 7, 0),
                             scope="conv")
    assert "cnnprof_test::myop" in cnnprof.formulas()
    fc = cnnprof.count_flops(UsesMyop(), (1, 4, 5, 5), scope="conv")
    assert fc.uncounted == () and fc.macs == CONV_MACS + 7


def test_ops_keyed_by_packet_overload_or_name_are_the_same_key(restore_registry):
    def cost(input, *, out, **_):
        return cnnprof.Cost("activation", 0, 0)

    for op in (aten.relu, aten.relu.default, "relu", "aten::relu"):
        cnnprof.register_formula(op, cost, replace=True)
        assert FORMULAS["relu"] == Registered(cost, "all")
        cnnprof.unregister_formula(op)
        assert "relu" not in FORMULAS


def test_unknown_aten_names_are_refused_with_close_matches():
    with pytest.raises(ValueError, match=r"unknown aten op 'rellu'.*did you mean 'relu'"):
        cnnprof.register_formula("rellu", lambda **_: None)
    with pytest.raises(ValueError, match="unknown aten op 'convolutoin'"):
        cnnprof.register_formula("aten::convolutoin", lambda **_: None)
    with pytest.raises(ValueError, match="no overload name"):
        cnnprof.register_formula("aten::add.Tensor", lambda **_: None)
    with pytest.raises(TypeError, match="expected an op"):
        cnnprof.register_formula(42, lambda **_: None)
    assert "rellu" not in FORMULAS and "convolutoin" not in FORMULAS


def test_duplicates_bad_scopes_and_non_callables_are_refused():
    with pytest.raises(ValueError, match="'relu' is already registered.*replace=True"):
        cnnprof.register_formula(aten.relu, lambda **_: None)
    with pytest.raises(ValueError, match=r"`scope='layer'`.*expected 'conv' or 'all'"):
        cnnprof.register_formula("cnnprof_test::myop", lambda **_: None, scope="layer")
    with pytest.raises(TypeError, match="must be callable"):
        cnnprof.register_formula("cnnprof_test::myop", "not a function")
    with pytest.raises(ValueError, match="no formula registered for 'cnnprof_test::myop'"):
        cnnprof.unregister_formula(myop)
    assert "cnnprof_test::myop" not in FORMULAS


def test_replace_swaps_a_builtin_formula_and_the_lookup_follows(restore_registry):
    net = nn.ReLU()
    assert cnnprof.count_flops(net, (2, 10), scope="all").other_ops == 20  # 1 op per element
    lookup(aten.relu.default)  # cached before the replacement: the cache must not keep the old formula
    cnnprof.register_formula(aten.relu, lambda input, *, out, **_: cnnprof.Cost("activation", 0, 5 * out.numel()),
                             replace=True)
    assert cnnprof.count_flops(net, (2, 10), scope="all").other_ops == 100
    assert lookup(aten.relu_.default)[0]((torch.empty(3, device="meta"),), {}, torch.empty(3, device="meta")) == (
        "activation", 0, 15)  # the in-place variant follows its op


def test_per_call_overrides_are_validated_and_consulted_first():
    def five(input, *, out, **_):
        return cnnprof.Cost("activation", 0, 5 * out.numel())

    overrides = resolve_formulas({aten.relu: five, "cnnprof_test::myop": (five, "conv")})
    assert overrides == {"relu": Registered(five, "all"), "cnnprof_test::myop": Registered(five, "conv")}
    x = torch.empty(2, 3, device="meta")
    caller, scope = lookup(aten.relu_.default, overrides)
    assert caller((x,), {}, x) == ("activation", 0, 30) and scope == "all"  # scope kept from the built-in
    assert lookup(aten.relu.default)[0]((x,), {}, x) == ("activation", 0, 6)  # the registry is untouched
    assert lookup(aten.conv2d.default, overrides)[1] == "conv"  # ops not overridden: the registry's
    assert resolve_formulas(None) == {} and resolve_formulas({}) == {}
    with pytest.raises(ValueError, match="unknown aten op 'rellu'"):
        resolve_formulas({"rellu": five})
    with pytest.raises(ValueError, match="`scope='everything'`"):
        resolve_formulas({"relu": (five, "everything")})
    with pytest.raises(ValueError, match="two formulas for 'relu'"):
        resolve_formulas({"relu": five, aten.relu: five})
    with pytest.raises(ValueError, match=r"a formula or \(formula, scope\)"):
        resolve_formulas({"relu": (five, "all", "extra")})


def test_a_formula_without_kwargs_gets_only_the_names_it_declares():
    def only_groups(groups, *, out):
        return cnnprof.Cost("grouped conv", groups, out.dim())

    caller, _ = lookup(aten.convolution.default, resolve_formulas({"convolution": only_groups}))
    x, w = torch.empty(1, 4, 5, 5, device="meta"), torch.empty(4, 2, 3, 3, device="meta")
    args = (x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 2)
    assert caller(args, {}, aten.convolution.default(*args)) == ("grouped conv", 2, 4)


def test_named_binding_reads_groups_wherever_the_op_puts_it():
    # cudnn_convolution(self, weight, padding, stride, dilation, groups, benchmark, deterministic, allow_tf32):
    # groups is 6th, where convolution has `transposed`; by name both are right. No CUDA needed: the output
    # is made by hand (2 x 8 x 10 x 10, 2 groups of 4 input channels, 3x3).
    caller, scope = lookup(aten.cudnn_convolution.default)
    x, w, out = (torch.empty(*s, device="meta") for s in ((2, 8, 10, 10), (8, 4, 3, 3), (2, 8, 10, 10)))
    args = (x, w, [1, 1], [1, 1], [1, 1], 2, False, False, True)
    assert caller(args, {}, out) == ("grouped conv", 2 * 8 * 100 * 4 * 9, 0) and scope == "conv"


def test_in_place_self_is_passed_as_input_and_kwargs_by_name():
    seen = {}

    def spy(input, other, *, out, alpha, **_):
        seen.update(input=input.shape, other=other, alpha=alpha)
        return cnnprof.Cost("element-wise", 0, 0)

    caller, _ = lookup(aten.add_.Tensor, resolve_formulas({"add": spy}))
    x = torch.empty(2, 3, device="meta")
    caller((x, 1.5), {"alpha": 2}, x)
    assert seen == {"input": (2, 3), "other": 1.5, "alpha": 2}
    caller((x, 1.5), {}, x)
    assert seen["alpha"] == 1  # the schema default


def test_every_builtin_aten_name_exists_in_torch():
    names = [key for key in FORMULAS if "::" not in key]
    assert [name for name in names if not hasattr(aten, name)] == []
    others = {key for key in FORMULAS if "::" in key and not key.startswith("torchvision::")}
    assert {key for key in FORMULAS if key.startswith("torchvision::")} == {"torchvision::nms", "torchvision::roi_align"}
    # quantized kernels (cnnprof/counting/formulas/quantized.py) are registered by their namespace::name
    assert [key for key in others if not hasattr(getattr(torch.ops, key.split("::")[0]), key.split("::")[1])] == []


def test_the_registry_view_is_read_only():
    with pytest.raises(TypeError):
        FORMULAS["relu"] = Registered(lambda **_: None, "all")
