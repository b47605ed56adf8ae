"""`cnnprof search`."""
from __future__ import annotations

import os
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import (
    app, Format, Convention, Scope, FormatOpt, ConventionOpt, ScopeOpt, ResolutionOpt, InputShapeOpt, InputOpt,
    OutputOpt, guard, open_output)
from cnnprof.cli.common import Device, print_note
from cnnprof.cli.device import DeviceSpecOpt, PredictThreadsOpt
from cnnprof.cli.sweep import BenchTimeOpt, DeviceOpt, Measuring, PlotOpt, PredictOpt, with_progress
from cnnprof.errors import CnnprofError

MetricList = Optional[list[str]]


class Sampler(str, Enum):
    auto = "auto"
    nsga2 = "nsga2"
    tpe = "tpe"
    random = "random"


@app.command()
def search(
    space: Annotated[str, typer.Option("--space", metavar="FILE", help="Design-space YAML (see configs/spaces/; a "
                                                                     "shipped name like regnet also works).")],
    trials: Annotated[int, typer.Option(min=1, help="Trials the study should hold when done, at most 1,000,000 "
                                                    "(a resumed study runs only the missing ones).")] = 100,
    minimize: Annotated[MetricList, typer.Option("--minimize", metavar="METRIC", show_default=False,
                                                 help="Objective to minimise (repeatable): params, macs, flops, "
                                                      "acts, latency.")] = None,
    maximize: Annotated[MetricList, typer.Option("--maximize", metavar="METRIC", show_default=False,
                                                 help="Objective to maximise (repeatable); objectives are ordered "
                                                      "minimised first, then maximised.")] = None,
    constraint: Annotated[MetricList, typer.Option("--constraint", metavar="EXPR", show_default=False,
                                                   help="Budget (repeatable): macs<=400M, params<=5M, "
                                                        "latency<=15ms (latency needs --bench or --predict).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Sampler seed: the same seed gives the same trials.",
                                                show_default=False)] = None,
    sampler: Annotated[Sampler, typer.Option(help="auto: NSGA-II for several objectives, TPE for one, random with "
                                                  "--stats (which needs random samples).")] = Sampler.auto,
    out: Annotated[Optional[str], typer.Option("--out", metavar="DIR", show_default=False,
                                               help="Where trials.json, trials.csv, the Pareto configs and the "
                                                    "study go (default: search-SPACE).")] = None,
    storage: Annotated[Optional[str], typer.Option(metavar="URL", show_default=False,
                                                   help="Optuna storage: a journal file (.log, .journal; "
                                                        "default OUT/study.log, or an earlier run's OUT/study.db), "
                                                        "a database URL (sqlite:///path.db; postgresql://... needs "
                                                        "cnnprof[distributed]) or an SQLite file (.db, .sqlite; "
                                                        "about 1/3 the trials/s of a journal file). Rerunning "
                                                        "resumes it; a shared database URL lets several machines "
                                                        "fill one study.")] = None,
    study_name: Annotated[Optional[str], typer.Option(help="Study name in the storage (default: the space's name).",
                                                      show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, show_default=False,
                                                   help="Processes counting trials in parallel (default: CPU cores; "
                                                        "1 with --bench, which times one trial at a time).")] = None,
    stats: Annotated[bool, typer.Option("--stats", help="Design-space statistics: quantiles and EDF plot of "
                                                        "params/MACs over random samples (pycls-style).")] = False,
    convention: ConventionOpt = Convention.macc,
    scope: ScopeOpt = Scope.conv,
    resolution: ResolutionOpt = None,
    input_shape_: InputShapeOpt = None,
    input_: InputOpt = None,
    bench: Annotated[bool, typer.Option("--bench", help="Measure each trial's latency (slow; one worker).")] = False,
    predict: PredictOpt = False,
    device_spec: DeviceSpecOpt = None,
    device: DeviceOpt = Device.cpu,
    min_time: BenchTimeOpt = 0.3,
    plot: PlotOpt = None,
    fmt: FormatOpt = Format.table,
    threads: PredictThreadsOpt = None,
    output: OutputOpt = None,
) -> None:
    """Budgeted design-space search with Optuna: Pareto front, every trial, one standalone config per chosen model."""
    how = Measuring(scope.value, resolution, bench, predict, device.value, device_spec, min_time,
                    input_shape=input_shape_, inputs=input_, threads=threads)
    options = dict(trials=trials, seed=seed, sampler=sampler.value, storage=storage, study_name=study_name,
                   workers=workers or (1 if bench else os.cpu_count() or 1), convention=convention.value, stats=stats)
    guard(partial(_search, space, minimize, maximize, constraint, how, options, out=out, plot=plot, fmt=fmt.value,
                  output=output))


def _search(space_file: str, minimize: MetricList, maximize: MetricList, constraint: MetricList, how: Measuring,
            options: dict[str, Any], *, out: str | None, plot: str | None, fmt: str, output: str | None) -> int:
    """`cnnprof search`: run or resume the study in the output directory, write the trial files, show the front.
    SIGTERM stops it as Ctrl-C does: the finished trials are kept and written, exit 130."""
    from cnnprof.design.metrics import parse_constraint
    from cnnprof.design.search import check_study_name, gate, parse_objectives, search_to_dir
    from cnnprof.design.space import load_space
    from cnnprof.design.storage import storage_url as check_storage
    from cnnprof.report.design import check_plot_path

    check_plot_path(plot)
    objectives = parse_objectives(minimize or [], maximize or [])
    constraints = [parse_constraint(c) for c in constraint or []]
    settings = how.settings(how.profile())
    space = load_space(space_file)
    check_study_name(options["study_name"])
    how.check_device()
    out_dir = _out_dir(out or f"search-{space.name}")
    check_storage(options["storage"])
    writer = open_output(output)
    stream = partial(_stream, writer, options["convention"], objectives or [("macs", "minimize")],
                     bool(gate(constraints, settings))) if writer else None
    saved = with_progress(partial(search_to_dir, out_dir, space, objectives, constraints, settings=settings,
                                  on_trial=stream, **options), "Searching")  # SIGTERM stops it as Ctrl-C (guard)
    for warning in saved.result.warnings:
        print_note(f"warning: {warning}")
    _write_trials(saved)
    _show(saved, fmt, plot)
    return 130 if saved.result.interrupted else 0


def _out_dir(path: str) -> Path:
    """The output directory, made now (before any trial runs) so a bad --out is one line."""
    out_dir = Path(path)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnprofError(f"--out {out_dir}: cannot create: {exc.strerror or exc}") from None
    return out_dir


def _stream(writer: Any, convention: str, objectives: list, gated: bool, trial: Any) -> None:
    """--output: one row per trial as it finishes, rejected samples too, flagged as in trials.json (pareto null:
    the front is known at the end, in trials.json)."""
    from cnnprof.report.design import trial_row

    writer.add([trial_row(trial, convention, objectives, None, gated)])


def _write_trials(saved: Any) -> None:
    """Every trial, as raw numbers, to OUT/trials.json and OUT/trials.csv, with the rejected samples flagged."""
    import json

    from cnnprof.design.search import output_path, write_text
    from cnnprof.report.design import trial_rows
    from cnnprof.report.render import render_csv

    rows = trial_rows(saved.result, saved.configs, rejected=True)
    write_text(output_path(saved.out_dir, "trials.json"), json.dumps(rows, indent=2) + "\n")
    write_text(output_path(saved.out_dir, "trials.csv"), render_csv(rows))


def _show(saved: Any, fmt: str, plot: str | None) -> None:
    """The Pareto front (or the statistics) on stdout, where the files are, and the plot."""
    from cnnprof.report.design import plot_pareto, plot_stats, search_report
    from cnnprof.report.render import emit

    stats = saved.distributions
    tables, json_rows, csv_rows = search_report(saved.result, saved.configs, stats)
    tables[0].notes.append(f"Every trial: {saved.out_dir / 'trials.json'} and trials.csv"
                           + ("" if stats is not None else f"; front configs: {saved.out_dir / 'pareto'}/"))
    emit(fmt, tables, json_rows, csv_rows)
    if plot:
        plot_stats(saved.result, stats, plot) if stats is not None else plot_pareto(saved.result, plot)
        print_note(f"wrote {plot}")
