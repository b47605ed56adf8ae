"""Reports of the design commands (sweep, match, search): tables, JSON/CSV rows and matplotlib plots.

matplotlib is imported only when a plot is asked for, with the Agg backend (no display needed).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnprof.counting.conventions import to_flops
from cnnprof.errors import CnnprofError
from cnnprof.report.labels import CONVENTION_TEXT, SCOPE_TEXT
from cnnprof.report.render import Column, OutputError, Report, Table, fixed, integer, si


def _value(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{1e3 * v:.2f}"


def point_row(p: Any, convention: str) -> dict[str, Any]:
    """Raw numbers of one Point (JSON/CSV), knob values first."""
    row: dict[str, Any] = dict(p.knobs)
    row.update(status=p.status, params=p.params, macs=p.macs,
               flops=None if p.macs is None else to_flops(p.macs, p.other_ops or 0, convention),
               acts=p.acts, latency_ms=None if p.latency_s is None else 1e3 * p.latency_s, error=p.error)
    return row


def metric_columns(convention: str, scope: str, acts: bool, latency: bool) -> list[Column]:
    """Params and MACs columns, plus FLOPs, acts and latency where the run has them."""
    cols = [Column("params", "Params", si), Column("macs", "MACs", si)]
    if scope == "all" or convention != "macc":
        cols.append(Column("flops", f"FLOPs [{convention}]", si))
    if acts:
        cols.append(Column("acts", "Acts", si))
    if latency:
        cols.append(Column("latency_ms", "Latency (ms)", fixed(2)))
    return cols


def latency_notes(s: Any) -> list[str]:
    """How a design command's latency was had (settings `s`, cnnprof.design.metrics.Settings): measured or
    predicted, on which inputs."""
    from cnnprof.inputs import describe

    on = f"inputs {describe(s.inputs)}" if s.inputs else f"batch {s.batch_size}"
    if s.bench:
        return [f"Latency: median forward pass on {s.device}, {on}."]
    if s.profile is not None:
        return [f"Latency: predicted on {s.profile.name} from per-op costs, without running the model "
                f"(see `cnnprof roofline`), {on}."]
    return []


def _display(row: dict[str, Any]) -> dict[str, Any]:
    return row


def sweep_report(result: Any, convention: str = "macc") -> Report:
    """Table of a SweepResult: knob values, params, MACs (and FLOPs, acts, latency when present)."""
    s = result.settings
    rows = [point_row(p, convention) for p in result.points]
    has_acts = any(r["acts"] is not None for r in rows)
    cols = [Column(k, k, _value) for k in result.knob_names]
    cols += metric_columns(convention, s.scope, has_acts, s.bench or s.profile is not None)
    fixed_text = ", ".join(f"{k}={v}" for k, v in result.fixed)
    title = (f"Sweep of {result.model}{' (' + fixed_text + ')' if fixed_text else ''} — FLOPs: "
             f"{CONVENTION_TEXT[convention]}; scope: {SCOPE_TEXT[s.scope]}")
    table = Table(title, cols, [_display(r) for r in rows if r["status"] == "ok"])
    for r in rows:
        if r["status"] != "ok":
            knobs = ", ".join(f"{k}={r[k]}" for k in result.knob_names)
            table.notes.append(f"{knobs}: {r['status']}: {r['error']}")
    table.notes += latency_notes(s)
    json_rows = [{"model": result.model, **r, "convention": convention, "scope": s.scope} for r in rows]
    return Report([table], json_rows, json_rows)


# ----------------------------------------------------------------------------- plots


def _pyplot():
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        raise CnnprofError("--plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> None:
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise CnnprofError(f"--plot {path}: use a .png, .svg or .pdf file name")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=130)
    except OSError as exc:  # checked before the work (check_plot_path), so a failure here is the write's
        raise OutputError(f"--plot {path}: cannot write: {exc.strerror or exc}") from None
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def check_plot_path(path: str | None) -> None:
    """Refuse a bad --plot name, or a folder that is missing or read-only, before any work is done."""
    if path and Path(path).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise CnnprofError(f"--plot {path}: use a .png, .svg or .pdf file name")
    check_plot_dir(path)


def check_plot_dir(path: str | None) -> None:
    """The folder of --plot must exist and be writable, and the file itself not be a folder."""
    if not path:
        return
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise CnnprofError(f"--plot {path}: no such folder {str(folder)!r}")
    if target.is_dir():
        raise CnnprofError(f"--plot {path}: is a folder; give a file name")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise CnnprofError(f"--plot {path}: not writable (permission denied)")


def plot_sweep(result: Any, path: str, y: str = "params", convention: str = "macc") -> None:
    """MACs (x) vs params or latency (y); one line per combination of the other knobs, points along the last."""
    plt = _pyplot()
    names = result.knob_names
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    lines: dict[tuple, list[Any]] = {}
    for p in result.points:
        if p.ok:
            lines.setdefault(tuple(p.knob(n) for n in names[:-1]), []).append(p)
    for key, pts in lines.items():
        xs = [to_flops(p.macs, p.other_ops or 0, convention) / 1e6 for p in pts]
        ys = [(p.params / 1e6) if y == "params" else (1e3 * p.latency_s if p.latency_s else float("nan")) for p in pts]
        label = ", ".join(f"{n}={v}" for n, v in zip(names[:-1], key)) or (names[-1] if names else result.model)
        ax.plot(xs, ys, marker="o", label=label)
        if names:
            for p, x_, y_ in zip(pts, xs, ys):
                ax.annotate(_value(p.knob(names[-1])), (x_, y_), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"{'MACs' if convention == 'macc' else 'FLOPs [' + convention + ']'} (M)")
    ax.set_ylabel("params (M)" if y == "params" else "latency (ms)")
    ax.set_title(f"{result.model}: sweep over {', '.join(names) or 'nothing'}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _metric_text(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{1e3 * value:.2f} ms" if metric == "latency" else si(value)


def match_report(result: Any) -> Report:
    """Table of a MatchResult: per setting of the fixed knobs, the knob value found and its cost."""
    s, m = result.settings, result.metric
    fixed_names = [k for k, _ in result.rows[0].fixed] if result.rows else []
    rows = []
    for r in result.rows:
        p = r.point
        row = {**dict(r.fixed), result.knob: r.value, "metric": m, "metric_value": r.metric_value,
               "target": result.target, "deviation": r.deviation, "params": p.params if p else None,
               "macs": p.macs if p else None, "latency_ms": 1e3 * p.latency_s if p and p.latency_s else None,
               "method": r.method, "evaluations": len(r.evaluations), "note": r.note}
        rows.append(row)
    cols = [Column(k, k, _value) for k in fixed_names] + [
        Column(result.knob, result.knob, _value), Column("params", "Params", si), Column("macs", "MACs", si)]
    if m not in ("params", "macs"):
        cols.append(Column("metric_value", m, lambda v: _metric_text(m, v)))
    cols += [Column("deviation", f"{m} vs target", lambda v: "-" if v is None else f"{100 * v:+.2f}%"),
             Column("method", "Search", justify="left"), Column("evaluations", "Evals", integer)]
    target = _metric_text(m, result.target)
    title = (f"Iso-{m}: {result.model}'s {result.knob} closest to {result.reference} ({target} {m}); "
             f"scope {s.scope}")
    table = Table(title, cols, rows)
    table.notes = [f"{', '.join(f'{k}={v}' for k, v in r.fixed) or result.knob}: {r.note}"
                   for r in result.rows if r.note]
    table.notes += latency_notes(s) if m == "latency" else []
    json_rows = [{"model": result.model, "reference": result.reference, "knob": result.knob, **r,
                  "evaluated": [[x, y] for x, y in res.evaluations]} for r, res in zip(rows, result.rows)]
    return Report([table], json_rows, rows)


def plot_match(result: Any, path: str) -> None:
    """Metric vs the varied knob for every setting, the target as a line, the chosen values marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    scale, unit = (1e3, "ms") if result.metric == "latency" else (1e-9, "G") if result.target > 1e9 else (1e-6, "M")
    for r in result.rows:
        pts = sorted((x, y) for x, y in r.evaluations if y is not None)
        label = ", ".join(f"{k}={v}" for k, v in r.fixed) or result.model
        label += f": {result.knob}={_value(r.value)}" if r.value is not None else ""
        line, = ax.plot([x for x, _ in pts], [y * scale for _, y in pts], marker=".", label=label)
        if r.value is not None:
            ax.plot([r.value], [r.metric_value * scale], marker="o", markersize=9, color=line.get_color())
    ax.axhline(result.target * scale, color="k", linestyle="--", linewidth=1, label=f"{result.reference}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(result.knob)
    ax.set_ylabel(f"{result.metric} ({unit})")
    ax.set_title(f"{result.model}: {result.knob} at iso-{result.metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def trial_rows(result: Any, configs: dict[int, str] | None = None, rejected: bool = False) -> list[dict[str, Any]]:
    """Every trial of a SearchResult as raw numbers: knobs, counts, objectives, feasibility, front membership; with
    `rejected`, also the samples rejected by a constraint, in trial order, each row flagged (as trials.json has;
    in a search that checked no constraint on counts, the rows are the trials' alone, as on stdout)."""
    front = set(result.pareto)
    rows = []
    rejected = rejected and bool(result.rejected or result.gated)
    trials = sorted((*result.trials, *result.rejected), key=lambda t: t.number) if rejected else result.trials
    for t in trials:
        row = trial_row(t, result.convention, result.objectives, t.number in front, rejected)
        if configs and t.number in configs:
            row["config"] = configs[t.number]
        rows.append(row)
    return rows


def trial_row(t: Any, convention: str, objectives: Any, pareto: bool | None, rejected: bool = False) -> dict[str, Any]:
    """One trial (a TrialRecord) as raw numbers; `pareto` None while the front is not known yet (a streamed row);
    with `rejected`, the row says whether a constraint on its counts rejected it."""
    row: dict[str, Any] = {"trial": t.number, "status": t.point.status, "feasible": t.feasible, "pareto": pareto}
    if rejected:
        row["rejected"] = t.rejected
    row.update(dict(t.sample))
    row.update({k: v for k, v in point_row(t.point, convention).items() if k not in dict(t.sample)
                and k != "status"})
    for (metric, direction), value in zip(objectives, t.values or [None] * len(objectives)):
        row[f"{direction}_{metric}"] = value
    return row


def search_report(result: Any, configs: dict[int, str] | None = None, stats: list[Any] | None = None) -> Report:
    """Pareto front table (and design-space statistics), JSON/CSV of every trial."""
    rows = trial_rows(result, configs)
    by_number = {r["trial"]: r for r in rows}
    knob_names = [k for k, _ in result.trials[0].sample] if result.trials else []
    s = result.settings
    tables = []
    if stats is None:
        objectives = ", ".join(f"{d} {m}" for m, d in result.objectives)
        cols = [Column("trial", "Trial", str)] + [Column(k, k, _short) for k in knob_names]
        cols += metric_columns(result.convention, s.scope, any(r["acts"] is not None for r in rows),
                               s.bench or s.profile is not None)
        cols += [Column("config", "Config", justify="left")] if configs else []
        front = Table(f"Pareto front of {result.space} ({objectives}"
                      f"{'; ' + ', '.join(c.text for c in result.constraints) if result.constraints else ''})",
                      cols, [_display(by_number[n]) for n in result.pareto])
        tables.append(front)
    else:
        tables.append(stats_table(result, stats))
    tables[0].notes += search_notes(result)
    return Report(tables, rows, rows)


def _short(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def search_notes(result: Any) -> list[str]:
    """Trial counts, invalid and infeasible trials, sampler and seed, this run's rate, an interruption."""
    n = len(result.trials)
    invalid = sum(1 for t in result.trials if not t.point.ok)
    infeasible = sum(1 for t in result.trials if t.point.ok and not t.feasible)
    rate = result.evaluated / result.elapsed_s if result.elapsed_s > 0 and result.evaluated else None
    notes = [f"{n} trials in study {result.study_name!r} ({result.storage}); {invalid} invalid (failed trials), "
             f"{infeasible} outside the constraints; sampler {result.sampler}, seed {result.seed}."]
    if result.rejected:
        notes.append(f"{len(result.rejected):,} samples rejected on their counts before they became trials "
                     f"({result.rejected_now:,} by this run): outside {_gate_text(result)}; not counted, listed in "
                     f"trials.json with rejected: true.")
    if result.evaluated or result.rejected_now:
        notes.append(f"This run: {result.evaluated} trials in {result.elapsed_s:.1f} s "
                     f"({rate or 0:.1f} trials/s, {result.workers} worker{'s' if result.workers > 1 else ''}).")
    if result.interrupted:
        notes.append("Interrupted: rerun the same command to resume the stored study.")
    return notes


def _gate_text(result: Any) -> str:
    return ", ".join(c.text for c in result.constraints)


STAT_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def stats_table(result: Any, stats: list[Any]) -> Table:
    """Quantiles of each metric over the valid samples (pycls's empirical distributions), and feasibility."""
    cols = [Column("metric", "Metric", justify="left"), Column("n", "Samples", integer)]
    cols += [Column(f"q{int(100 * q)}", {0.0: "min", 1.0: "max"}.get(q, f"p{int(100 * q)}"), lambda v: _metric_text("", v))
             for q in STAT_QUANTILES]
    rows = []
    for d in stats:
        fmt_scale = 1.0
        row = {"metric": d.metric + (" (ms)" if d.metric == "latency" else ""), "n": len(d.values)}
        for q in STAT_QUANTILES:
            v = d.quantile(q) * fmt_scale
            row[f"q{int(100 * q)}"] = 1e3 * v if d.metric == "latency" else v
        rows.append(row)
    table = Table(f"Design-space statistics of {result.space} ({len(result.trials)} samples, sampler "
                  f"{result.sampler})", cols, rows)
    if result.constraints:
        valid = [t for t in result.trials if t.point.ok]
        drawn = len(valid) + len(result.rejected)
        share = sum(t.feasible for t in valid) / drawn if drawn else 0.0
        table.notes.append(f"{100 * share:.1f}% of valid samples satisfy {_gate_text(result)}"
                           + (f"; the statistics are of the {len(valid):,} inside (pycls samples within complexity "
                              f"bounds)." if result.rejected else "."))
    return table


def plot_pareto(result: Any, path: str) -> None:
    """First two objectives: every feasible trial, infeasible ones, and the Pareto front as a step line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    objs = result.objectives

    def xy(t, i):
        return t.values[i] / (1e6 if objs[i][0] != "latency" else 1e-3)

    unit = lambda m: "ms" if m == "latency" else "M"  # noqa: E731
    done = [t for t in result.trials if t.values]
    if len(objs) == 1:
        xs = [t.number for t in done]
        ax.scatter(xs, [xy(t, 0) for t in done], s=8, c=["tab:blue" if t.feasible else "tab:red" for t in done])
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{objs[0][0]} ({unit(objs[0][0])}, {objs[0][1]}d)")
    else:
        feas = [t for t in done if t.feasible]
        infeas = [t for t in done if not t.feasible]
        rejected = [(x, y) for x, y in (_counted_xy(result, t) for t in result.rejected)
                    if x is not None and y is not None]
        if rejected:  # counted, never evaluated: where the budget cut the sampler off
            ax.scatter(*zip(*rejected), s=8, marker="x", c="tab:red", alpha=0.25, linewidths=0.6,
                       label=f"rejected on their counts ({len(rejected):,})")
        if infeas:
            ax.scatter([xy(t, 0) for t in infeas], [xy(t, 1) for t in infeas], s=8, c="tab:red", alpha=0.3,
                       label="outside constraints")
        ax.scatter([xy(t, 0) for t in feas], [xy(t, 1) for t in feas], s=8, c="tab:gray", alpha=0.5, label="feasible")
        front = [result.trial(n) for n in result.pareto]
        ax.plot([xy(t, 0) for t in front], [xy(t, 1) for t in front], "o-", color="tab:blue", markersize=4,
                label="Pareto front")
        ax.set_xscale("log")  # complexity spans orders of magnitude over a design space
        ax.set_yscale("log")
        ax.set_xlabel(f"{objs[0][0]} ({unit(objs[0][0])}, {objs[0][1]})")
        ax.set_ylabel(f"{objs[1][0]} ({unit(objs[1][0])}, {objs[1][1]})")
        ax.legend(fontsize=8)
    ax.set_title(f"{result.space}: {len(result.trials)} trials"
                 f"{' — ' + ', '.join(c.text for c in result.constraints) if result.constraints else ''}")
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def _counted_xy(result: Any, t: Any) -> tuple[float | None, float | None]:
    """A rejected sample's first two objectives from its counts (it has no objective values: never evaluated)."""
    values = result.counted_values(t)[:2]
    scaled = [None if v is None else v / (1e6 if m != "latency" else 1e-3)
              for v, (m, _) in zip(values, result.objectives)]
    return scaled[0], scaled[1]


def plot_stats(result: Any, stats: list[Any], path: str) -> None:
    """Empirical distribution functions (EDF) of each metric over the space, as pycls plots them."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(stats), figsize=(3.6 * len(stats), 3.4), squeeze=False)
    for ax, d in zip(axes[0], stats):
        n = len(d.values)
        scale, unit = (1e3, "ms") if d.metric == "latency" else (1e-6, "M")
        ax.step([v * scale for v in d.values], [(i + 1) / n for i in range(n)], where="post")
        for c in result.constraints:
            if c.metric == d.metric:
                ax.axvline(c.bound * scale, color="tab:red", linestyle="--", linewidth=1, label=c.text)
                ax.legend(fontsize=8)
        if d.values[0] > 0 and d.values[-1] / d.values[0] > 100:
            ax.set_xscale("log")
        ax.set_xlabel(f"{d.metric} ({unit})")
        ax.set_ylabel("cumulative prob.")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{result.space}: EDF over {len(result.trials)} samples")
    _save(fig, path)
