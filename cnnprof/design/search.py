"""Budgeted design-space search (NAS without training): Optuna drives, cnnprof counts.

The study (samplers, constraints, storage) is Optuna's: a sqlite:/// URL resumes after Ctrl-C, and the
same study name on a shared database URL lets workers on several machines fill one study (Optuna's
documented way to scale out). Trials are asked and told in fixed-size batches, evaluated by a pool of
processes, so the samples depend on --seed only, not on the number of workers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from cnnprof.design.metrics import Constraint, Point, Settings, get_metric, metric_value, require
from cnnprof.design.space import Space
from cnnprof.errors import CnnprofError, first_line

BATCH = 8  # trials asked before any is told: fixed, so results do not depend on --workers
SAMPLERS = ("auto", "nsga2", "tpe", "random")
POINT_FIELDS = ("status", "error", "params", "macs", "other_ops", "acts", "latency_s")


@dataclass(frozen=True)
class TrialRecord:
    """One trial of the study: the sampled knob values and what they cost."""

    number: int
    sample: tuple[tuple[str, Any], ...]
    point: Point
    feasible: bool  # valid and within every constraint
    values: tuple[float, ...] | None  # objective values (None for a failed trial)


@dataclass(frozen=True)
class SearchResult:
    space: str
    space_source: str
    study_name: str
    storage: str
    sampler: str
    seed: int | None
    objectives: tuple[tuple[str, str], ...]  # (metric, "minimize" | "maximize")
    constraints: tuple[Constraint, ...]
    convention: str
    settings: Settings
    trials: tuple[TrialRecord, ...]
    pareto: tuple[int, ...]  # trial numbers on the feasible Pareto front, by first objective
    evaluated: int  # trials run by this call (the rest were in the stored study)
    elapsed_s: float
    interrupted: bool = False
    workers: int = 1

    def trial(self, number: int) -> TrialRecord:
        return next(t for t in self.trials if t.number == number)


@dataclass(frozen=True)
class Distribution:
    """Empirical distribution of one metric over the valid samples (pycls-style design-space statistics)."""

    metric: str
    values: tuple[float, ...]  # sorted

    def quantile(self, q: float) -> float:
        xs = self.values
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def evaluate_sample(space: Space, sample: dict[str, Any], settings: Settings) -> Point:
    """Materialise one sample of the space and count it; an invalid sample is a Point with status invalid."""
    from cnnprof.design.metrics import evaluate

    try:
        config = space.config(sample)
    except CnnprofError as exc:
        return Point(tuple(sample.items()), status="invalid", error=first_line(exc))
    return evaluate(config, {}, settings, knobs=sample)


def search(space: Space, objectives: Sequence[tuple[str, str]], constraints: Sequence[Constraint] = (), *,
           trials: int = 100, seed: int | None = None, sampler: str = "auto", storage: str | None = None,
           study_name: str | None = None, workers: int = 1, settings: Settings = Settings(),
           convention: str = "macc", stats: bool = False,
           progress: Callable[[int, int], None] | None = None) -> SearchResult:
    """Run (or resume) a study until it holds `trials` finished trials; return every trial and the front."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if trials < 1:
        raise CnnprofError(f"--trials must be >= 1, got {trials}")
    if not objectives and not stats:
        raise CnnprofError("give an objective (--minimize METRIC or --maximize METRIC), or --stats")
    objectives = list(objectives) or [("macs", "minimize")]
    for metric, _ in objectives:
        require(metric, settings)
    for c in constraints:
        require(c.metric, settings)
    if sampler not in SAMPLERS:
        raise CnnprofError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    kind = sampler if sampler != "auto" else "random" if stats else "nsga2" if len(objectives) > 1 else "tpe"
    study_name = study_name or space.name
    constraints = tuple(constraints)

    def constraints_func(frozen) -> list[float]:
        return list(frozen.user_attrs.get("constraints", [1.0] * len(constraints)))

    # Optuna >= 5 reads constraints set on the trial (Trial.set_constraint); older ones need constraints_func.
    cf = constraints_func if constraints and not hasattr(optuna.trial.Trial, "set_constraint") else None
    samplers = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, constraints_func=cf),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constraints_func=cf, multivariate=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    try:
        study = optuna.create_study(storage=open_storage(storage), study_name=study_name, sampler=samplers[kind](),
                                    directions=[d for _, d in objectives], load_if_exists=True)
    except ValueError as exc:  # e.g. directions differ from the stored study's
        raise CnnprofError(f"study {study_name!r}: {first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - a bad storage URL or an unreachable database
        raise CnnprofError(f"--storage {storage}: {type(exc).__name__}: {first_line(exc)}") from None
    stored = [d.name.lower() for d in study.directions]
    if stored != [d for _, d in objectives] or study.user_attrs.get("objectives", [m for m, _ in objectives]) != [
            m for m, _ in objectives]:
        raise CnnprofError(f"study {study_name!r} in {storage} was made for other objectives "
                           f"({study.user_attrs.get('objectives')}); use another --study-name or --out")
    if study.user_attrs.get("space", space.source) != space.source:
        raise CnnprofError(f"study {study_name!r} in {storage} searches {study.user_attrs['space']}, not {space.source}")
    study.set_user_attr("objectives", [m for m, _ in objectives])
    study.set_user_attr("space", space.source)

    finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    start, evaluated, interrupted, batch, told = time.perf_counter(), 0, False, [], set()
    pool = _pool(workers) if workers > 1 and not settings.bench else None
    try:
        while True:
            done = len(_counted(study, finished))
            if progress:
                progress(min(done, trials), trials)
            if done >= trials:
                break
            batch = [study.ask() for _ in range(min(BATCH, trials - done))]
            samples = [{k.name: k.suggest(t) for k in space.knobs} for t in batch]
            jobs = [(space, s, settings) for s in samples]
            points = list(pool.map(_evaluate_job, jobs)) if pool else [_evaluate_job(j) for j in jobs]
            for t, point in zip(batch, points):
                told.add(t.number)
                _tell(study, t, point, objectives, constraints, convention)
                evaluated += 1
    except KeyboardInterrupt:
        interrupted = True
        for t in batch:  # this process's trials left running by the interruption (not other workers')
            if t.number not in told:
                study.tell(t, state=TrialState.FAIL)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    records = tuple(_record(t, space, constraints) for t in _counted(study, finished))
    return SearchResult(space=space.name, space_source=space.source, study_name=study_name, storage=storage or "memory",
                        sampler=kind, seed=seed, objectives=tuple(objectives), constraints=constraints,
                        convention=convention, settings=settings, trials=records,
                        pareto=pareto_front(records, objectives), evaluated=evaluated,
                        elapsed_s=time.perf_counter() - start, interrupted=interrupted, workers=workers if pool else 1)


def _counted(study: Any, finished: tuple) -> list[Any]:
    """Finished trials that were evaluated: a trial failed by an interruption does not use up the budget."""
    return [t for t in study.get_trials(deepcopy=False, states=finished) if "cnnprof" in t.user_attrs]


def open_storage(storage: str | None) -> Any:
    """None: in memory; a URL with '://' (sqlite:///study.db, postgresql://...): Optuna's RDB storage, shareable
    by machines; any other string: an Optuna journal file (appends only, ~10x less overhead per trial than
    SQLite here; shareable by processes on one machine or a shared file system)."""
    if storage is None or "://" in storage:
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(storage))


def _evaluate_job(job: tuple[Space, dict, Settings]) -> Point:
    return evaluate_sample(*job)


def _pool(workers: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import cnnprof.counting.flops  # noqa: F401 - imported before forking, so no worker imports torch again
    import cnnprof.counting.params  # noqa: F401
    import cnnprof.models.builder  # noqa: F401

    # fork: children inherit the imported torch and cnnprof (no re-import per worker).
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)


def _worker_init() -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)


def _tell(study: Any, trial: Any, point: Point, objectives, constraints, convention: str) -> None:
    from optuna.trial import TrialState

    # One attribute, one storage write (each write is a database round trip).
    trial.set_user_attr("cnnprof", {name: getattr(point, name) for name in POINT_FIELDS})
    if not point.ok:
        study.tell(trial, state=TrialState.FAIL)
        return
    values = [metric_value(point, m, convention) for m, _ in objectives]
    if any(v is None for v in values):
        missing = next(m for (m, _), v in zip(objectives, values) if v is None)
        study.tell(trial, state=TrialState.FAIL)
        raise CnnprofError(f"metric {missing!r} is not available in this build")
    cons = []
    for c in constraints:
        v = metric_value(point, c.metric, convention)
        if v is None:
            study.tell(trial, state=TrialState.FAIL)
            raise CnnprofError(f"metric {c.metric!r} is not available in this build")
        cons.append(c.violation(v) if not c.satisfied(v) else min(0.0, c.violation(v)))
    if hasattr(trial, "set_constraint"):  # Optuna >= 5
        for c, value in zip(constraints, cons):
            trial.set_constraint(c.text, value)
    else:
        trial.set_user_attr("constraints", cons)
    study.tell(trial, values)


def _record(t: Any, space: Space, constraints: Sequence[Constraint]) -> TrialRecord:
    attrs = t.user_attrs["cnnprof"]
    point = Point(tuple(t.params.items()), **{k: attrs.get(k) for k in POINT_FIELDS})
    feasible = point.ok and t.values is not None and all(
        c.satisfied(metric_value(point, c.metric)) for c in constraints)
    return TrialRecord(t.number, point.knobs, point, feasible, tuple(t.values) if t.values is not None else None)


def pareto_front(records: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]]) -> tuple[int, ...]:
    """Numbers of the feasible trials no other feasible trial dominates (ties: the first trial only)."""
    sign = [1 if d == "minimize" else -1 for _, d in objectives]
    pts = [(r.number, tuple(s * v for s, v in zip(sign, r.values))) for r in records if r.feasible]
    front, seen = [], set()
    for n, v in pts:
        dominated = any(all(a <= b for a, b in zip(w, v)) and w != v for _, w in pts)
        if not dominated and v not in seen:
            front.append((v, n))
            seen.add(v)
    return tuple(n for _, n in sorted(front))


def distributions(result: SearchResult) -> list[Distribution]:
    """Empirical distributions of the count metrics over the valid trials (acts when counted)."""
    valid = [t.point for t in result.trials if t.point.ok]
    out = []
    for metric in ("params", "macs", "flops", "acts", "latency"):
        values = [metric_value(p, metric, result.convention) for p in valid]
        if values and all(v is not None for v in values):
            if metric == "flops" and result.convention == "macc" and result.settings.scope == "conv":
                continue  # identical to macs
            out.append(Distribution(metric, tuple(sorted(values))))
    return out


def check_metric(name: str) -> str:
    """A metric name usable as an objective (raises listing the valid ones)."""
    return get_metric(name).name



def write_configs(result: SearchResult, space: Space, out_dir: Any, numbers: Sequence[int] | None = None) -> dict[int, str]:
    """Write each chosen trial (default: the Pareto front) as a standalone YAML config; trial -> path."""
    from pathlib import Path

    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for number in result.pareto if numbers is None else numbers:
        t = result.trial(number)
        name = f"{space.name}_t{number:04d}"
        raw = space.config_raw(dict(t.sample))
        raw["name"] = name
        knobs = ", ".join(f"{k}={_short(v)}" for k, v in t.sample)
        raw["description"] = f"cnnprof search of {space.source}, trial {number}: {knobs}"
        raw["reference"] = f"{t.point.params} params, {t.point.macs} MACs ({result.settings.scope} scope)"
        path = out / f"{name}.yaml"
        path.write_text(f"# Written by `cnnprof search` (study {result.study_name}); rebuild with "
                        f"`cnnprof flops {path}`.\n" + yaml.safe_dump(raw, sort_keys=False, width=120))
        paths[number] = str(path)
    return paths


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
