"""The options that set each Python parameter, to turn library messages into the CLI's words."""
from __future__ import annotations

from cnnprof.errors import PARAMETER

# Python parameter -> CLI option. A parameter not listed keeps its Python name (backticks dropped).
OPTIONS = {
    "auto_batch": "--auto-batch", "batch_size": "--batch-size", "batch_sizes": "--batch-size",
    "breakdown": "--breakdown", "channels_last": "--channels-last", "compile": "--compile",
    "constraint": "--constraint", "convention": "--convention", "device": "--device", "profile": "--device-spec",
    "device_spec": "--device-spec", "dtype": "--dtype", "input_shape": "--input-shape", "inputs": "--input",
    "min_runs": "--min-runs", "min_time": "--min-time", "output": "--output", "overrides": "--set",
    "resolution": "--resolution", "scope": "--scope", "backend": "--backend", "threads": "--threads",
    "warmup": "--warmup", "space": "--space", "trials": "--trials", "workers": "--workers", "storage": "--storage",
    "study_name": "--study-name",
    "out": "--out", "predict": "--predict", "bench": "--bench", "by": "--by", "depth": "--depth",
    "minimize": "--minimize", "maximize": "--maximize", "stats": "--stats",
    "knob": "--vary", "reference": "--to", "target": "--target", "bounds": "--range", "axes": "--set",
    "fixed": "--set", "quick": "--quick", "cached": "--cached", "seed": "--seed", "sampler": "--sampler",
    "mode": "--mode", "frozen": "--frozen", "budget": "--budget", "optimizer": "--optimizer", "amp": "--amp",
}


def _option(match) -> str:
    name, value = match.group(1), match.group(2)
    flag = OPTIONS.get(name)
    if flag is None:
        return name if value is None else f"{name}={value}"
    return flag if value is None else f"{flag} {value}"


def as_options(message: str) -> str:
    """A library message in the CLI's words: `min_runs=0` -> --min-runs 0, `input_shape` -> --input-shape."""
    return PARAMETER.sub(_option, message)
