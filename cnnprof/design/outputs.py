"""What a search writes into its output directory: the Pareto front's configs, each file whole or not at all,
never outside the directory."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from cnnprof.errors import CnnprofError, parameter

CONFIG_HEADER = "# Written by `cnnprof search`"  # a front config's first line: what a rerun may remove


def remove_stale_configs(pareto_dir: Path, keep: Any) -> None:
    """Remove the configs an earlier run wrote to pareto_dir for trials no longer on the front (a resumed study's
    front moves), so that the directory holds exactly the front; files cnnprof did not write stay."""
    keep = {Path(p).name for p in keep}
    for path in sorted(pareto_dir.glob("*.yaml")):
        if path.name in keep or not path.is_file() or path.is_symlink():
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                ours = f.readline().startswith(CONFIG_HEADER)
            if ours:
                path.unlink()
        except OSError as exc:
            raise CnnprofError(f"{path}: cannot remove: {exc.strerror or exc}") from None


def output_path(out_dir: str | Path, name: str) -> Path:
    """out_dir/name, refused unless it resolves inside out_dir: whatever a name from a file or an existing link
    says, a search writes only under its output directory."""
    path = Path(out_dir) / name
    if not path.resolve().is_relative_to(Path(out_dir).resolve()):
        raise CnnprofError(f"{path}: resolves outside {parameter('out')} {out_dir}; refusing to write there")
    return path


def write_text(path: Path, text: str) -> None:
    """Write an output file whole or not at all (a temporary file renamed over it, so that a run stopped while
    writing never leaves a truncated file); a failure is one line naming the file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CnnprofError(f"{path}: cannot write: {exc.strerror or exc}") from None


def write_configs(result: Any, space: Any, out_dir: Any,
                  numbers: Sequence[int] | None = None) -> dict[int, str]:
    """Write each chosen trial (default: the Pareto front) as a standalone YAML config; trial -> path."""
    import yaml

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnprofError(f"{out}: cannot create: {exc.strerror or exc}") from None
    paths = {}
    for number in result.pareto if numbers is None else numbers:
        t = result.trial(number)
        name = f"{space.name}_t{number:04d}"
        raw = space.config_raw(dict(t.sample))
        raw["name"] = name
        knobs = ", ".join(f"{k}={_short(v)}" for k, v in t.sample)
        raw["description"] = f"cnnprof search of {space.source}, trial {number}: {knobs}"
        raw["reference"] = f"{t.point.params} params, {t.point.macs} MACs ({result.settings.scope} scope)"
        path = output_path(out, f"{name}.yaml")
        header = f"{CONFIG_HEADER[2:]} (study {result.study_name}); rebuild with `cnnprof flops {path}`."
        write_text(path, f"# {' '.join(header.splitlines())}\n" + yaml.safe_dump(raw, sort_keys=False, width=120))
        paths[number] = str(path)
    return paths


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
