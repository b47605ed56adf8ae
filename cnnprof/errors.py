"""User-facing errors: each carries a one-line message; the CLI prints it and exits with code 2.

Library code (counting, timing, predict, models) names the Python parameter a bad value came from in
backticks, as a Python user would write it: "`min_runs=0`: expected 1 to 1000000", "set them with
`input_shape` / `inputs`". The CLI prints the option that sets it instead ("--min-runs 0", "--input-shape");
see `cnnprof.cli.options.as_options`.
"""
import re

# `name` or `name=value` in backticks: a Python parameter named in a message.
PARAMETER = re.compile(r"`([a-z_][a-z0-9_]*)(?:=([^`]*))?`")


def parameter(name: str, value: object = None) -> str:
    """How a message names a parameter (and its value): `name` or `name=value` in backticks."""
    return f"`{name}`" if value is None else f"`{name}={value}`"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class CnnprofError(Exception):
    """Bad input from the user (model spec, config, option value). Message is one line."""


class ModelSpecError(CnnprofError):
    """A model spec that names no zoo model, file or importable callable."""


class ConfigError(CnnprofError):
    """A YAML config that cannot be parsed or validated; the message names the file and the key."""


class InputShapeError(CnnprofError):
    """A model that cannot run on the requested input shape."""


class DeviceError(CnnprofError):
    """A device that is not available (e.g. CUDA on a machine without a GPU)."""
