"""`cnnprof device`, and the device profile that roofline, compare --predict and bench --breakdown use."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, err, print_error, Format, Device, DType, FormatOpt, OutputOpt, guard, open_output, emit_report, INTERRUPTED)
from cnnprof.errors import CnnprofError

DeviceSpecOpt = Annotated[Optional[str], typer.Option(
    "--device-spec", metavar="NAME|FILE.json", show_default=False,
    help="Use a known GPU's datasheet peaks (h100, h200, a100, l4, t4, rtx3090, rtx4090, rtx5090, v100; marked as "
         "datasheet, not measured; predictions on it use the GPU efficiency model fitted on timm's RTX 3090 table) "
         "or a saved profile (`cnnprof device --format json > f.json`) instead of this device's measured one.")]


def warn(message: str) -> None:
    """A one-line warning on stderr (the command goes on), escaped as errors are."""
    print_error(message, prefix="warning")


@contextmanager
def _stops_calibration():
    """SIGTERM stops a calibration as Ctrl-C does (the calibration keeps what it measured on KeyboardInterrupt);
    yields a list that holds the signal once one arrived."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum, frame):
        got.append(signum)
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _measure(device: str, dtype: str, quick: bool) -> tuple[Any, int]:
    """(profile, 0), or (what was measured, 130) after Ctrl-C/SIGTERM; (None, 130) when stopped before the
    peaks, the least a profile needs (one line says so)."""
    with _stops_calibration() as stopped:
        try:
            profile = measure_with_progress(device, dtype, quick)
        except CnnprofError as exc:
            if not stopped:
                raise
            print_error(exc)
            return None, INTERRUPTED
    return profile, INTERRUPTED if stopped else 0


@contextmanager
def measuring_profile(device: str, dtype: str) -> Iterator[None]:
    """One cnnprof at a time measures a device's profile (a lock beside its cache file): two measuring at once
    would each see the CPU half busy and cache a slow profile."""
    from cnnprof.predict.device import cache_path
    from cnnprof.predict.trust import measuring

    def waiting() -> None:
        err.print(f"note: another cnnprof is measuring the {device} profile; waiting for it", markup=False)

    with measuring(cache_path(device, dtype), on_wait=waiting):
        yield


def measure_with_progress(device: str, dtype: str = "float32", quick: bool = False) -> Any:
    """Run the calibration with a rich progress bar on stderr; Ctrl-C keeps what was measured."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cnnprof.predict.latency import calibrate

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("Calibrating", total=1)

        def step(label: str, done: int, total: int) -> None:
            progress.update(task, description=f"Calibrating: {label}", completed=done, total=total)

        return calibrate(device, dtype, quick=quick, on_step=step)


PredictThreadsOpt = Annotated[Optional[int], typer.Option(
    "--threads", min=1, show_default=False,
    help="CPU threads to predict for (at most the machine's cores; default torch's): the device profile of that "
         "thread count is used, measured on first use and cached.")]


def use_threads(threads: int | None, spec: str | None = None) -> None:
    """--threads of a prediction: checked (1 to this machine's cores; no effect with --device-spec, whose profile
    has its own), then set for the whole command, so the profile and layer table of that count are the ones used."""
    if threads is None:
        return
    if spec:
        raise CnnprofError("--threads has no effect with --device-spec (that profile was measured at its own thread "
                           "count); drop one of them")
    import torch

    from cnnprof.timing.settings import validate_timing

    validate_timing(0.0, 0.0, 1, threads, "float32")  # bench's rule: 1 to this machine's cores
    torch.set_num_threads(threads)


def _layer_note(label: str, done: int, total: int) -> None:
    if done == 0:
        err.print(f"note: timing {total} layer{'' if total == 1 else 's'} not yet in this device's layer table "
                  f"(once: they are cached)", markup=False)


def profile_for(device: str, spec: str | None, dtype: str = "float32", threads: int | None = None,
                measure_layers: bool = False) -> Any:
    """The profile a prediction uses: --device-spec, else the cached one of this thread count, else measured now
    (and cached); a measured one comes with its table of measured layers (cnnprof.predict.lut), which
    `measure_layers` fills on demand with the layers of the models predicted."""
    from cnnprof.predict.device import cached_profile, resolve_profile, save_profile
    from cnnprof.predict.lut import attach
    from cnnprof.timing.settings import check_device

    use_threads(threads, spec)
    if not spec:
        check_device(device)

    def measure():
        with measuring_profile(device, dtype):
            profile = cached_profile(device, None, dtype)  # cached by another cnnprof while we waited for it
            if profile is not None:
                return profile
            err.print(f"note: no device profile cached for {device}; measuring it now (see `cnnprof device`)")
            profile = measure_with_progress(device, dtype)
            save_profile(profile, warn)
            return profile

    profile = resolve_profile(spec, device, measure, warn, dtype)
    if not profile.complete:
        err.print(f"note: the {device} profile was interrupted while measuring; op types it did not reach use the "
                  f"plain roofline (rerun `cnnprof device --device {device}` to complete it)")
    return attach(profile, on_demand=measure_layers, on_step=_layer_note, warn=warn)


def requested_profile(predict: bool, device: str, spec: str | None, threads: int | None = None,
                      measure_layers: bool = False) -> Any:
    """The profile for --predict (None without it); --device-spec and --threads need --predict."""
    if spec and not predict:
        raise CnnprofError("--device-spec applies only with --predict; add --predict or drop it")
    return profile_for(device, spec, threads=threads, measure_layers=measure_layers) if predict else None


def _given(ctx: Any, names: dict[str, str]) -> list[str]:
    """The options (of `names`: parameter -> option) given on the command line, not left at their default."""
    given = []
    for name, flag in names.items():
        source = ctx.get_parameter_source(name)  # Click's ParameterSource (typer vendors Click: compared by name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.append(flag)
    return given


_NOT_WITH_SPEC = {"device": "--device", "cached": "--cached", "quick": "--quick", "threads": "--threads",
                  "dtype": "--dtype"}


def check_device_options(ctx: Any, device_spec: str | None, cached: bool, quick: bool, threads: int | None) -> None:
    """Options that would have no effect are errors: any measuring option with --device-spec (nothing is
    measured or cached), --quick with --cached (nothing is measured); --threads is bounded as bench bounds it."""
    if device_spec:
        ignored = _given(ctx, _NOT_WITH_SPEC)
        if ignored:
            raise CnnprofError(f"{', '.join(ignored)} {'has' if len(ignored) == 1 else 'have'} no effect with "
                               f"--device-spec (it shows that profile as given; nothing is measured or cached)")
    if cached and quick:
        raise CnnprofError("--quick has no effect with --cached (nothing is measured); drop one of them")
    if threads is not None:
        from cnnprof.timing.settings import validate_timing

        validate_timing(0.0, 0.0, 1, threads, "float32")  # bench's rule: 1 to this machine's cores


@app.command("device")
def device_cmd(
    ctx: typer.Context,
    device: Annotated[Device, typer.Option(help="Device to measure: cpu, or cuda (exit 2 if CUDA is not available).")] = Device.cpu,
    device_spec: DeviceSpecOpt = None,
    cached: Annotated[bool, typer.Option("--cached", help="Show the cached profile instead of measuring again.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Shorter measurements (smaller GEMM and arrays, a quarter of "
                                                        "the timing per layer): a rougher profile, faster.")] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads (torch.set_num_threads); profiles are "
                                                          "cached per thread count.", show_default=False)] = None,
    dtype: Annotated[DType, typer.Option(help="Data type of the per-op-type calibration micro-benchmarks.")] = DType.float32,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """Measure what this device attains: peak FLOP/s per dtype (GEMM), memory bandwidth (copy, triad), per-op
    and per-module overhead, and a per-op-type latency calibration; cached for later commands."""
    guard(partial(_checked, ctx, device.value, device_spec, cached, quick, threads, dtype.value, fmt.value, output))


def _checked(ctx: Any, device: str, device_spec: str | None, cached: bool, quick: bool, threads: int | None,
             dtype: str, fmt: str, output: str | None) -> int:
    check_device_options(ctx, device_spec, cached, quick, threads)
    return _run(device, device_spec, cached, quick, threads, dtype, fmt, output)


def _run(device: str, device_spec: str | None, cached: bool, quick: bool, threads: int | None, dtype: str,
         fmt: str, output: str | None = None) -> int:
    """Show the profile of a datasheet or file, the cached one, or measure (and cache) a new one; --output gets
    its row once it is measured (or interrupted: Ctrl-C or SIGTERM keep what was measured, exit 130)."""
    from cnnprof.predict.device import cached_profile, datasheet, load_profile_file, save_profile
    from cnnprof.timing.settings import check_device
    from cnnprof.report.roofline import device_report

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    path, code, writer = None, 0, open_output(output)
    if device_spec:
        profile = load_profile_file(device_spec) if device_spec.endswith(".json") else datasheet(device_spec)
    else:
        check_device(device)
        profile = cached_profile(device, warn, dtype) if cached else None
        if cached and profile is None:
            at = "" if dtype == "float32" else f" --dtype {dtype}"
            raise CnnprofError(f"no cached profile for {device}{at.replace(' --dtype', ' calibrated at')}; run "
                               f"`cnnprof device --device {device}{at}`")
        if profile is None:
            with measuring_profile(device, dtype):
                profile, code = _measure(device, dtype, quick)
                if profile is None:
                    return code
                saved = save_profile(profile, warn)
            path = str(saved) if saved is not None else None
    report = device_report(profile, path)
    if writer is not None:
        writer.add(*report[1:])
    emit_report(fmt, report, 0)  # the profile's own note says it was interrupted
    return code
