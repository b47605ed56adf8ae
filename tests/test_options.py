"""Library messages name Python parameters; the CLI shows the options that set them."""
from cnnprof.cli.options import as_options
from cnnprof.errors import parameter


def test_parameters_become_options():
    assert as_options(f"{parameter('min_runs', 0)}: expected 1 to 1000000") == "--min-runs 0: expected 1 to 1000000"
    assert as_options(f"set them with {parameter('input_shape')} / {parameter('inputs')}") == \
        "set them with --input-shape / --input"


def test_unknown_parameters_keep_their_name_and_plain_text_is_untouched():
    assert as_options("`frobnicate=3` is odd") == "frobnicate=3 is odd"
    assert as_options("no parameter here, `Not a name`") == "no parameter here, `Not a name`"
