"""Input specs (cnnprof/inputs.py): parsing, the API forms count_flops accepts, batch and resolution."""
import subprocess
import sys

import pytest
import torch

from cnnprof.errors import CnnprofError
from cnnprof.inputs import (InputSpec, as_specs, make_inputs, normalize, parse_input, parse_inputs,
                            with_batch_and_resolution)


def test_parse_positional_named_and_dtypes():
    assert parse_input("1,3,224,224") == InputSpec((1, 3, 224, 224))
    assert parse_input("1x128:long") == InputSpec((1, 128), "int64")
    assert parse_input("mask=1,224,224:bool", named=True) == InputSpec((1, 224, 224), "bool", "mask")
    assert parse_inputs(["2,8:int64"], ["mask=2,8:bool"]) == (InputSpec((2, 8), "int64"),
                                                              InputSpec((2, 8), "bool", "mask"))
    assert parse_inputs(None, None) is None


@pytest.mark.parametrize("text, named, message", [
    ("1,3,x", False, "expected integers"),
    ("1,0,4", False, "positive integer"),
    ("1,4:int7", False, "unknown dtype 'int7'"),
    ("1,4", True, "expected NAME=SHAPE"),
    ("2bad=1,4", True, "expected NAME=SHAPE"),
])
def test_parse_errors_are_one_line(text, named, message):
    with pytest.raises(CnnprofError, match=message):
        parse_input(text, named)


def test_a_name_given_twice_is_an_error():
    with pytest.raises(CnnprofError, match="given twice"):
        parse_inputs([], ["x=1,2", "x=1,3"])


def test_api_forms():
    t = torch.zeros(2, 5, dtype=torch.int32)
    assert normalize((1, 3, 8, 8)) == ((InputSpec((1, 3, 8, 8)),), {})
    assert normalize("1,8:int64") == ((InputSpec((1, 8), "int64"),), {})
    args, kwargs = normalize(((1, 4), t, None))
    assert args[0] == InputSpec((1, 4)) and args[1] is t and args[2] is None and kwargs == {}
    assert normalize({"x": (1, 4), "m": "1,4:bool"}) == ((), {"x": InputSpec((1, 4)), "m": InputSpec((1, 4), "bool")})
    assert normalize([InputSpec((1, 4)), InputSpec((1, 4), name="y")]) == ((InputSpec((1, 4)),),
                                                                         {"y": InputSpec((1, 4), name="y")})
    nested = normalize(({"image": (1, 3, 4, 4), "ids": t},))
    assert as_specs(*nested) == (InputSpec((1, 3, 4, 4)), InputSpec((2, 5), "int32"))
    with pytest.raises(CnnprofError, match="positive integers"):
        normalize((1, -3))


def test_materialize_meta_stand_ins_and_real_fill_values():
    t = torch.ones(2, 3)
    (meta_spec, meta_t), _ = make_inputs((InputSpec((1, 4), "int64"), t), {})
    assert meta_spec.is_meta and meta_spec.dtype == torch.int64 and meta_t.is_meta and meta_t.shape == (2, 3)
    (x, ids), kw = make_inputs((InputSpec((1000,)), InputSpec((4,), "int64")), {"m": InputSpec((4,), "bool")},
                               real=True)
    assert 0 <= x.min() and x.max() < 1 and ids.sum() == 0 and not kw["m"].any()


def test_batch_and_resolution():
    specs = (InputSpec((1, 3, 240, 320)), InputSpec((1, 240, 320), "bool", "mask"))
    out = with_batch_and_resolution(specs, 4, 480)
    assert out[0].shape == (4, 3, 480, 640) and out[1].shape == (4, 240, 320)  # aspect kept; only the first
    assert with_batch_and_resolution((InputSpec((1, 3, 8, 32, 32)),), None, 64)[0].shape == (1, 3, 8, 64, 64)
    assert with_batch_and_resolution((InputSpec((1, 2, 16000)),), None, 8000)[0].shape == (1, 2, 8000)
    with pytest.raises(CnnprofError, match="no spatial dimensions"):
        with_batch_and_resolution((InputSpec((1, 128), "int64"),), None, 64)


def test_inputs_module_does_not_import_torch():
    code = "import sys, cnnprof.inputs as i; i.parse_inputs(['1,3:int64'], ['m=1,3:bool']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
