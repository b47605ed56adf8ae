"""`cnnprof search`."""
from __future__ import annotations

import os
from enum import Enum
from typing import Optional

import typer
from typing_extensions import Annotated

from cnnprof.cli.common import app, err, Format, Convention, Scope, FormatOpt, ConventionOpt, ScopeOpt, ResolutionOpt, guard
from cnnprof.cli.common import Device
from cnnprof.cli.device import DeviceSpecOpt
from cnnprof.cli.sweep import BenchTimeOpt, DeviceOpt, PlotOpt, PredictOpt, _with_progress, prediction_profile

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
    trials: Annotated[int, typer.Option(min=1, help="Trials the study should hold when done (a resumed study "
                                                    "runs only the missing ones).")] = 100,
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
                                                  "--stats.")] = Sampler.auto,
    out: Annotated[Optional[str], typer.Option("--out", metavar="DIR", show_default=False,
                                               help="Where trials.json, trials.csv, the Pareto configs and the "
                                                    "study database go (default: search-SPACE).")] = None,
    storage: Annotated[Optional[str], typer.Option(metavar="URL", show_default=False,
                                                   help="Optuna storage: a database URL (default "
                                                        "sqlite:///OUT/study.db; postgresql://...) or a journal file "
                                                        "path (about twice the trials/s of SQLite on 2 cores). "
                                                        "Rerunning resumes it; a shared database URL lets several "
                                                        "machines fill one study.")] = None,
    study_name: Annotated[Optional[str], typer.Option(help="Study name in the storage (default: the space's name).",
                                                      show_default=False)] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes counting trials in parallel (default: CPU cores; "
                                                     "1 with --bench).")] = os.cpu_count() or 1,
    stats: Annotated[bool, typer.Option("--stats", help="Design-space statistics: quantiles and EDF plot of "
                                                        "params/MACs over random samples (pycls-style).")] = False,
    convention: ConventionOpt = Convention.macc,
    scope: ScopeOpt = Scope.conv,
    resolution: ResolutionOpt = None,
    bench: Annotated[bool, typer.Option("--bench", help="Measure each trial's latency (slow; one worker).")] = False,
    predict: PredictOpt = False,
    device_spec: DeviceSpecOpt = None,
    device: DeviceOpt = Device.cpu,
    min_time: BenchTimeOpt = 0.3,
    plot: PlotOpt = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Budgeted design-space search with Optuna: Pareto front, every trial, one standalone config per chosen model."""

    def body() -> int:
        from pathlib import Path

        from cnnprof.design.metrics import Settings, get_metric, parse_constraint
        from cnnprof.design.search import distributions, search as run_search, write_configs
        from cnnprof.design.space import load_space
        from cnnprof.report.design import check_plot_path, plot_pareto, plot_stats, search_report, trial_rows
        from cnnprof.report.render import emit, render_csv

        check_plot_path(plot)
        objectives = [(get_metric(m).name, "minimize") for m in minimize or []]
        objectives += [(get_metric(m).name, "maximize") for m in maximize or []]
        constraints = [parse_constraint(c) for c in constraint or []]
        sp = load_space(space)
        if bench:
            from cnnprof.timing.runtime import check_device

            check_device(device.value)
        out_dir = Path(out or f"search-{sp.name}")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from cnnprof.errors import CnnprofError

            raise CnnprofError(f"--out {out_dir}: cannot create: {exc.strerror or exc}") from None
        settings = Settings(scope=scope.value, resolution=resolution, bench=bench, device=device.value,
                            min_time=min_time, profile=prediction_profile(predict, bench, device.value, device_spec))
        result = _with_progress(lambda cb: run_search(
            sp, objectives, constraints, trials=trials, seed=seed, sampler=sampler.value,
            storage=storage or f"sqlite:///{(out_dir / 'study.db').resolve()}", study_name=study_name, workers=workers,
            settings=settings, convention=convention.value, stats=stats, progress=cb), "Searching")
        configs = {} if stats else write_configs(result, sp, out_dir / "pareto")
        rows = trial_rows(result, configs)
        import json

        (out_dir / "trials.json").write_text(json.dumps(rows, indent=2) + "\n")
        (out_dir / "trials.csv").write_text(render_csv(rows))
        dists = distributions(result) if stats else None
        tables, json_rows, csv_rows = search_report(result, configs, dists)
        tables[0].notes.append(f"Every trial: {out_dir / 'trials.json'} and trials.csv"
                               + ("" if stats else f"; front configs: {out_dir / 'pareto'}/"))
        emit(fmt.value, tables, json_rows, csv_rows)
        if plot:
            plot_stats(result, dists, plot) if stats else plot_pareto(result, plot)
            err.print(f"wrote {plot}", markup=False)
        return 130 if result.interrupted else 0

    guard(body)
