"""Device profiles are data from files (the cache, `device_spec` files): read with bounds, checked by one schema.

A profile file must be a regular file (a FIFO, device or directory is refused before it is opened, so nothing
hangs) of at most MAX_BYTES, JSON nested at most a few levels, with every number finite and in range: peaks
and bandwidths positive, overheads and times non-negative, known dtypes. A bad file is one error naming the
file and the key; nothing in it is ever run or trusted as code.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cnnprof.errors import CnnprofError
from cnnprof.models.yaml_input import is_finite_number, read_regular

MAX_BYTES = 1 << 20  # a profile is a few kB
MAX_NAME = 200
MAX_FITS = 64
DTYPES = ("float32", "float16", "bfloat16", "float64")
DEVICES = ("cpu", "cuda")


class ProfileError(CnnprofError):
    """A profile file or cache entry that is not a valid device profile (one line: where and what)."""


def read_json(path: str | Path, what: str) -> Any:
    """The JSON data of a regular file of at most MAX_BYTES (`what` names it in errors)."""
    raw = read_regular(path, MAX_BYTES, what, "device profile", "JSON", ProfileError)
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser can go
        raise ProfileError(f"{what}: not JSON ({type(exc).__name__}: {str(exc)[:80]})") from None


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    """A finite number (1e308 stands for infinity in saved fits), > 0 if `positive`, else >= 0."""
    if isinstance(value, int) and not isinstance(value, bool) and not is_finite_number(value):
        value = math.inf if value > 0 else -math.inf  # beyond float range (JSON reads 10**400): as 1e999 reads
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ProfileError(f"{where}: expected a number, got {_shown(value)}")
    if value < 0 or (positive and value == 0) or (math.isinf(value) and value > 0 and not where.endswith("_per_s")):
        raise ProfileError(f"{where}: expected a {'positive' if positive else 'non-negative'} finite number, "
                           f"got {_shown(value)}")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise ProfileError(f"{where}: expected a name of at most {MAX_NAME} characters, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise ProfileError(f"{where}: expected one of {', '.join(choices)}, got {_shown(value)}")
    return value


def _peaks(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict) or "float32" not in value:
        raise ProfileError(f"{where}: expected a mapping of dtype to FLOP/s with float32, got {_shown(value)}")
    return {_choice(k, DTYPES, f"{where}.{k}"): _number(v, f"{where}.{k}", positive=True) for k, v in value.items()}


def _fit(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: expected a fit (overhead_s, flops_per_s, bytes_per_s, ...), got {_shown(value)}")
    samples = value.get("samples", 0)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise ProfileError(f"{where}.samples: expected a count, got {_shown(samples)}")
    return {"overhead_s": _number(value.get("overhead_s"), f"{where}.overhead_s"),
            "flops_per_s": _number(value.get("flops_per_s"), f"{where}.flops_per_s", positive=True),
            "bytes_per_s": _number(value.get("bytes_per_s"), f"{where}.bytes_per_s", positive=True),
            "samples": samples, "median_error": _number(value.get("median_error", 0.0), f"{where}.median_error")}


def _calibration(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or len(value) > MAX_FITS:
        raise ProfileError(f"{where}: expected a mapping of op type to fit, got {_shown(value)}")
    return {_text(k, f"{where} key"): _fit(v, f"{where}.{k}") for k, v in value.items()}


def _optional(value: Any, where: str) -> float | None:
    return None if value is None else _number(value, where, positive=True)


def checked(data: Any, what: str) -> dict[str, Any]:
    """The fields of a DeviceProfile from JSON data, every one checked (unknown keys are ignored)."""
    if isinstance(data, list) and len(data) == 1:  # the device command prints its JSON as a list of one
        data = data[0]
    if not isinstance(data, dict):
        raise ProfileError(f"{what}: expected a device profile (a JSON object), got {type(data).__name__}")
    threads = data.get("threads", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= 1 << 16:
        raise ProfileError(f"{what}: threads: expected a thread count, got {_shown(threads)}")
    return {
        "device": _choice(data.get("device"), DEVICES, f"{what}: device"),
        "name": _text(data.get("name"), f"{what}: name"),
        "torch_version": _text(data.get("torch_version", ""), f"{what}: torch_version"),
        "threads": threads, "source": _text(data.get("source", "file"), f"{what}: source"),
        "peak_flops": _peaks(data.get("peak_flops"), f"{what}: peak_flops"),
        "bandwidth": _number(data.get("bandwidth"), f"{what}: bandwidth", positive=True),
        "op_overhead_s": _number(data.get("op_overhead_s", 0.0), f"{what}: op_overhead_s"),
        "module_overhead_s": _number(data.get("module_overhead_s", 0.0), f"{what}: module_overhead_s"),
        "view_overhead_s": _number(data.get("view_overhead_s", 0.0), f"{what}: view_overhead_s"),
        "copy_bandwidth": _optional(data.get("copy_bandwidth"), f"{what}: copy_bandwidth"),
        "triad_bandwidth": _optional(data.get("triad_bandwidth"), f"{what}: triad_bandwidth"),
        "calibration": _calibration(data.get("calibration", {}), f"{what}: calibration"),
        "calibration_dtype": _choice(data.get("calibration_dtype", "float32"), DTYPES, f"{what}: calibration_dtype"),
        "complete": _flag(data.get("complete", True), f"{what}: complete"),
        "seconds": _number(data.get("seconds", 0.0), f"{what}: seconds"),
    }


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ProfileError(f"{where}: expected true or false, got {_shown(value)}")
    return value
