"""Budgeted design-space search (NAS without training): Optuna drives, cnnprof counts.

The study (samplers, constraints, storage) is Optuna's: a sqlite:/// URL resumes after Ctrl-C, and the
same study name on a shared database URL lets workers on several machines fill one study (Optuna's
documented way to scale out). Trials are asked and told in fixed-size batches, evaluated by a pool of
processes, so the samples depend on --seed only, not on the number of workers.

Trials stay inside the budget: a sample is counted first, as a sum of memoised part counts (cnnprof.design.memo,
~1 ms), and one outside a constraint on a counted metric (params, MACs, FLOPs, acts, or a predicted latency) is
rejected before anything costly runs: stored as a pruned trial (Optuna's constrained samplers learn from its
violations), flagged in trials.json, never counted against `trials` (pycls samples within complexity bounds
the same way).
"""
from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from cnnprof.design.outputs import (  # noqa: F401 - output_path, write_text: re-exported
    CONFIG_HEADER, output_path, remove_stale_configs, write_configs, write_text)
from cnnprof.design.metrics import Constraint, Point, Settings, counted, get_metric, metric_value, require
from cnnprof.design.space import Space, name_problem
from cnnprof.design.leases import Lease, budget, rerun_stale
from cnnprof.design.stats import Distribution, distributions  # noqa: F401 - re-exported
from cnnprof.design.storage import close, redacted, sync
from cnnprof.design.study import (
    Asked, TrialRecord, ask_stored, fail_stored, finish_stored, finished_trials, make_sampler, mirror, open_study,
    record, sampler_kind, tell, working_study)
from cnnprof.design.workers import make_pool, signals_deferred, stop_pool
from cnnprof.errors import CnnprofError, first_line, parameter
from cnnprof.results import Printable

BATCH = 8  # trials asked before any is told: fixed, so results do not depend on --workers
POLL_S = 0.5  # how often a search whose remaining trials other processes run checks on them
MAX_TRIALS = 1_000_000  # a study's ceiling: more is a typo (a study this size is days of counting), not a plan
# Rejected samples one call may draw before it gives up on a budget that leaves (almost) nothing of the space.
REJECT_BASE, REJECT_PER_TRIAL = 1000, 20
SHARED_BATCHES = 4  # a worker is told the part counts the others made in this many recent batches


@dataclass(frozen=True)
class SearchResult(Printable):
    """A study after a search: every finished trial, the feasible Pareto front, and how this call went."""

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
    trials: tuple[TrialRecord, ...]  # the study's trials, rejected samples apart
    pareto: tuple[int, ...]  # trial numbers on the feasible Pareto front, by first objective
    evaluated: int  # trials run by this call (the rest were in the stored study)
    elapsed_s: float
    interrupted: bool = False
    workers: int = 1
    warnings: tuple[str, ...] = ()  # e.g. a resumed study that stores no description of its space
    rejected: tuple[TrialRecord, ...] = ()  # samples outside a constraint on a counted metric (the whole study's)
    rejected_now: int = 0  # of which this call drew

    @property
    def gated(self) -> bool:
        """Whether samples were checked against a constraint on their counts (then each trial says if rejected)."""
        return bool(gate(self.constraints, self.settings))

    def counted_values(self, t: TrialRecord) -> tuple[float | None, ...]:
        """A trial's objective values from its counts: a rejected sample's too (never evaluated, it has no
        objective values of its own); None for a metric it was not measured on."""
        return tuple(metric_value(t.point, m, self.convention) for m, _ in self.objectives)

    def trial(self, number: int) -> TrialRecord:
        """The trial of this number (a rejected sample too)."""
        return next(t for t in (*self.trials, *self.rejected) if t.number == number)


def evaluate_sample(space: Space, sample: dict[str, Any], settings: Settings, gate: Sequence[Constraint] = (),
                    convention: str = "macc") -> Point:
    """Materialise one sample of the space and count it (as a sum of memoised part counts where it can); benchmark
    it only when it satisfies the `gate` constraints. An invalid sample is a Point with status invalid."""
    from cnnprof.design.memo import count_config
    from cnnprof.design.metrics import evaluate

    try:
        config = space.config(sample)
    except CnnprofError as exc:
        return Point(tuple(sample.items()), status="invalid", error=first_line(exc))
    point = count_config(config, replace(settings, profile=None) if settings.bench else settings, sample)
    if point is not None and (not settings.bench or rejects(point, gate, convention)):
        return point
    return evaluate(config, {}, settings, knobs=sample)


def rejects(point: Point, gate: Sequence[Constraint], convention: str) -> bool:
    """Whether a counted point falls outside one of the constraints checked before a trial is accepted."""
    return point.ok and not all(c.satisfied(metric_value(point, c.metric, convention)) for c in gate)


def search(space: Space, objectives: Sequence[tuple[str, str]], constraints: Sequence[Constraint] = (), *,
           trials: int = 100, seed: int | None = None, sampler: str = "auto", storage: str | None = None,
           study_name: str | None = None, workers: int = 1, settings: Settings = Settings(),
           convention: str = "macc", stats: bool = False, progress: Callable[[int, int], None] | None = None,
           on_trial: Callable[[TrialRecord], None] | None = None, cache: str | Path | None = None) -> SearchResult:
    """Run (or resume) a study until it holds `trials` finished trials, samples rejected by a constraint apart;
    return every trial and the front. `on_trial` sees each trial this call finishes (a rejected sample too), as it
    finishes (e.g. to stream it to a file). `cache`: a file of part counts (cnnprof.design.memo) read first and
    written after, so a resumed or parallel search counts no part twice."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objectives = _checked_objectives(objectives, constraints, trials, settings, stats)
    _check_combinations(workers, settings, sampler, stats)
    kind = sampler_kind(sampler, objectives, stats)
    check_study_name(study_name)
    study_name = study_name or space.name
    constraints = tuple(constraints)
    study, warnings = open_study(space, objectives, storage, study_name, make_sampler(kind, seed, constraints),
                                 constraints)
    work = working_study(make_sampler(kind, seed, constraints), objectives)
    start = time.perf_counter()
    warnings += _read_cache(cache)
    pool = make_pool(workers) if workers > 1 and not settings.bench else None
    run = _Run(study, work, space, settings, objectives, constraints, convention, gate(constraints, settings), on_trial)
    evaluated, rejected, interrupted = run.until(trials, pool, progress)
    warnings += run.warnings + _write_cache(cache)
    stored = [record(t, constraints) for t in finished_trials(study)]
    close(study)
    records = tuple(r for r in stored if not r.rejected)
    return SearchResult(space=space.name, space_source=space.source, study_name=study_name,
                        storage=redacted(storage) or "memory",
                        sampler=kind, seed=seed, objectives=tuple(objectives), constraints=constraints,
                        convention=convention, settings=settings, trials=records,
                        pareto=pareto_front(records, objectives), evaluated=evaluated,
                        elapsed_s=time.perf_counter() - start, interrupted=interrupted, workers=workers if pool else 1,
                        warnings=tuple(warnings), rejected=tuple(r for r in stored if r.rejected),
                        rejected_now=rejected)


def _read_cache(cache: str | Path | None) -> list[str]:
    from cnnprof.design.memo import load_cache

    warning = load_cache(cache) if cache is not None else None
    return [warning] if warning else []


def _write_cache(cache: str | Path | None) -> list[str]:
    from cnnprof.design.memo import save_cache

    warning = save_cache(cache) if cache is not None else None
    return [warning] if warning else []


def check_study_name(study_name: str | None) -> None:
    """A study name is a label, checked as a space's name is: it is written into the configs' headers and,
    by default, the space's name names the output directory and files."""
    problem = None if study_name is None else name_problem(study_name)
    if problem:
        raise CnnprofError(f"{parameter('study_name')}: {problem}")


def _check_combinations(workers: int, settings: Settings, sampler: str, stats: bool) -> None:
    """Options that cannot go together, refused rather than one of them silently ignored."""
    if settings.bench and workers > 1:
        raise CnnprofError(f"{parameter('bench')} times trials one at a time (timings taken in parallel would "
                           f"disturb each other); {parameter('workers', workers)} cannot go with it, use 1")
    if stats and sampler not in ("auto", "random"):
        raise CnnprofError(f"{parameter('stats')} needs uniform random samples (its quantiles and EDF describe the "
                           f"space, not where a {sampler} sampler looked); {parameter('sampler', sampler)} cannot go "
                           f"with it, use random or auto")


def _checked_objectives(objectives: Sequence[tuple[str, str]], constraints: Sequence[Constraint], trials: int,
                        settings: Settings, stats: bool) -> list[tuple[str, str]]:
    """The objectives to optimise (macs for statistics without any), each measurable with these settings."""
    if not 1 <= trials <= MAX_TRIALS:
        raise CnnprofError(f"{parameter('trials')} must be in [1, {MAX_TRIALS:,}], got {trials:.3g}"
                           if trials > MAX_TRIALS else f"{parameter('trials')} must be >= 1, got {trials}")
    for c in constraints:
        if not math.isfinite(c.bound):
            raise CnnprofError(f"{parameter('constraint', repr(c.text))}: the bound must be a finite number, "
                               f"got {c.bound}")
    if not objectives and not stats:
        raise CnnprofError("give an objective (--minimize METRIC or --maximize METRIC), or --stats")
    objectives = list(objectives) or [("macs", "minimize")]
    for metric, _ in objectives:
        require(metric, settings)
    for c in constraints:
        require(c.metric, settings)
    return objectives


def gate(constraints: Sequence[Constraint], settings: Settings) -> tuple[Constraint, ...]:
    """The constraints checked on a sample's count, before it becomes a trial (those on a counted metric)."""
    return tuple(c for c in constraints if counted(c.metric, settings))


@dataclass
class _Run:
    """One call's trials: asked in batches, evaluated (in a pool of processes or here), told to the study: drawn
    by the sampler in the in-memory working study, stored in the stored study (see cnnprof.design.study)."""

    study: Any  # the stored study
    work: Any  # the working study
    space: Space
    settings: Settings
    objectives: Sequence[tuple[str, str]]
    constraints: tuple[Constraint, ...]
    convention: str
    gate: tuple[Constraint, ...] = ()  # constraints checked on the count, before a trial is accepted
    on_trial: Callable[[TrialRecord], None] | None = None
    warnings: list[str] = field(default_factory=list)
    learnt: list[list] = field(default_factory=list)  # part counts the workers made, by batch (passed on to all)
    tally: dict[str, int] = field(default_factory=lambda: {"evaluated": 0, "rejected": 0})  # this call's
    batch: list[Asked] = field(default_factory=list)  # this process's trials being run, and which are told
    told: set[int] = field(default_factory=set)
    judged: dict[int, bool] = field(default_factory=dict)  # finished trial number -> counts against the budget
    ours: set[int] = field(default_factory=set)  # stored trials this call drew (already in the working study)

    def until(self, trials: int, pool: Any, progress: Callable[[int, int], None] | None) -> tuple[int, int, bool]:
        """Run batches until the study holds `trials` accepted trials: (trials evaluated, samples rejected,
        interrupted). Trials other processes are running count against the budget; those a dead process left
        running are run again; samples rejected by a constraint on their counts use up nothing (up to a limit)."""
        finished = False
        try:
            with Lease(self.study) as lease:
                rerun_stale(self.study)
                while not finished:
                    finished = self.step(trials, lease, pool, progress)
        except KeyboardInterrupt:
            return self.tally["evaluated"], self.tally["rejected"], True
        finally:  # interrupted or failed: no trial of ours is left running, no worker outlives the run
            if pool:
                stop_pool(pool, terminate=not finished)
            self.fail_untold()
        return self.tally["evaluated"], self.tally["rejected"], False

    def step(self, trials: int, lease: Lease, pool: Any, progress: Callable[[int, int], None] | None) -> bool:
        """Read the study once, then stop (whether it does), wait for other processes' trials, or run a batch."""
        fresh: list[Any] = []
        done, running, waiting = budget(self.study, self.judged, fresh)
        mirror(self.work, [t for t in fresh if t.number not in self.ours])
        if progress:
            progress(min(len(done), trials), trials)
        if len(done) >= trials or self.gave_up(len(done), trials):
            return True
        free = trials - len(done) - len(running)
        if free <= 0:  # the rest is being run by other processes: wait for them (or their death)
            time.sleep(POLL_S)
            rerun_stale(self.study)
            return False
        with signals_deferred():  # asked and recorded as ours whole, so an interruption fails every one
            self.batch, self.told = self.ask(min(BATCH, free), trials, lease, done | running, waiting), set()
        for asked, point in zip(self.batch, self.evaluate(self.batch, pool)):
            self.tell(asked, point)
        sync(self.study)  # durable once a batch, not once a write
        return False

    def gave_up(self, done: int, trials: int) -> bool:
        """Whether this call drew so many rejected samples that the constraints leave (almost) nothing."""
        if self.tally["rejected"] < REJECT_BASE + REJECT_PER_TRIAL * trials:
            return False
        self.warnings.append(f"{self.tally['rejected']:,} samples of this run fell outside "
                             f"{', '.join(c.text for c in self.gate)}; stopped with {done} of {trials} trials (the "
                             f"constraints leave too little of the space)")
        return True

    def tell(self, asked: Asked, point: Point) -> None:
        """Store one evaluated trial (rejected when outside the gate) and stream it, whole or not at all."""
        with signals_deferred():
            self.told.add(asked.number)
            outside = rejects(point, self.gate, self.convention)
            frozen = tell(self.work, asked.trial, point, self.objectives, self.constraints, self.convention,
                          rejected=outside)
            if not finish_stored(self.study, asked, frozen):
                return  # another process failed it as stale meanwhile: it runs the sample again
            self.tally["rejected" if outside else "evaluated"] += 1
            if self.on_trial:
                self.on_trial(replace(record(frozen, self.constraints), number=asked.number))

    def ask(self, count: int, trials: int, lease: Lease, counted: set[int], waiting: list[Any]) -> list[Asked]:
        """Ask `count` trials (`waiting`: queued samples of stale trials, first) and record them as this process's;
        any that other processes' trials, asked at the same time, push past the budget is given back (failed
        without counts, so it uses up nothing)."""
        from optuna.trial import TrialState

        queued = (ask_stored(self.study, self.work, self.space, w) for w in waiting[:count])
        batch = [a for a in queued if a is not None]
        batch += [ask_stored(self.study, self.work, self.space) for _ in range(count - len(batch))]
        self.ours.update(a.number for a in batch)
        lease.claim(a.number for a in batch)
        counted = counted | {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        numbers = sorted(counted)
        over = [a for a in batch if bisect.bisect_left(numbers, a.number) >= trials]  # trials before it: the budget
        for a in over:
            fail_stored(self.study, self.work, a)
        return [a for a in batch if a not in over]

    def evaluate(self, batch: list[Asked], pool: Any) -> list[Point]:
        """Count the samples of the asked trials (a worker hands back the parts it counted)."""
        from cnnprof.design.memo import MEMO

        jobs = [(self.space, a.sample, self.settings, self.gate, self.convention) for a in batch]
        if not pool:  # here, in this process's own memo
            return [_evaluate_job((*j, None))[0] for j in jobs]
        # Each worker also learns what the others counted lately, so no part is traced once per worker.
        recent = [entry for added in self.learnt[-SHARED_BATCHES:] for entry in added]
        points, learnt = [], []
        for point, added in pool.map(_evaluate_job, [(*j, recent) for j in jobs]):
            MEMO.merge(added)
            learnt += added
            points.append(point)
        self.learnt.append(learnt)
        return points

    def fail_untold(self) -> None:
        """Fail this process's trials left running by an interruption (not other workers')."""
        for a in self.batch:
            if a.number not in self.told:
                fail_stored(self.study, self.work, a)


def _evaluate_job(job: tuple) -> tuple[Point, list]:
    """A worker's evaluation, with the part counts it made (for the parent's cache and the other workers); with
    `recent` None, an evaluation in the searching process itself (whose memo keeps what it made)."""
    from cnnprof.design.memo import MEMO

    *args, recent = job
    if recent is None:
        return evaluate_sample(*args), []
    MEMO.learn(recent)
    return evaluate_sample(*args), MEMO.take_added()


def pareto_front(records: Sequence[TrialRecord], objectives: Sequence[tuple[str, str]]) -> tuple[int, ...]:
    """Numbers of the feasible trials no other feasible trial dominates (ties: the first trial only), ordered by
    their objective values. In lexicographic order every point that dominates another comes before it, and a
    dominated dominator is itself dominated by a point of the front: so each point is checked against the front
    found so far only (O(n * front) instead of O(n^2): a 10,000-trial study has a front of tens)."""
    sign = [1 if d == "minimize" else -1 for _, d in objectives]
    pts = sorted((tuple(s * v for s, v in zip(sign, r.values)), r.number) for r in records if r.feasible)
    front: list[tuple[tuple[float, ...], int]] = []
    for v, n in pts:
        if front and front[-1][0] == v:  # a tie with a point kept already (of a lower number)
            continue
        if not any(all(a <= b for a, b in zip(w, v)) for w, _ in front):
            front.append((v, n))
    return tuple(n for _, n in front)


@dataclass(frozen=True)
class SavedSearch:
    """A search whose study and chosen configs are in a directory: the result, configs by trial, statistics."""

    result: SearchResult
    out_dir: Path
    configs: dict[int, str]  # trial number -> written config (the Pareto front; none for statistics)
    distributions: list[Distribution] | None  # with stats only


def parse_objectives(minimize: Sequence[str] = (), maximize: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Metric names to (metric, direction) objectives, minimised first; an unknown name raises listing them all."""
    return [(get_metric(m).name, "minimize") for m in minimize] + [(get_metric(m).name, "maximize") for m in maximize]


def default_storage(out_dir: Path) -> str:
    """The study of an --out directory: an Optuna journal file, study.log (appends only; shared by processes on one
    machine, or on a file system where a file can be locked); an earlier cnnprof's SQLite study.db there is resumed
    as it is. A journal file runs ~3x the trials/s of SQLite: Optuna's RDB layer issues ~20 SQL statements per
    sample through SQLAlchemy (10,000 RegNet trials: 137 s against 393 s on 2 cores, benchmarks/RESULTS.md)."""
    old = output_path(out_dir, "study.db")
    if old.is_file() and not output_path(out_dir, "study.log").exists():
        return f"sqlite:///{old.resolve()}"
    return str(output_path(out_dir, "study.log"))


def search_to_dir(out_dir: str | Path, space: Space, objectives: Sequence[tuple[str, str]],
                  constraints: Sequence[Constraint] = (), *, trials: int = 100, seed: int | None = None,
                  sampler: str = "auto", storage: str | None = None, study_name: str | None = None, workers: int = 1,
                  settings: Settings = Settings(), convention: str = "macc", stats: bool = False,
                  progress: Callable[[int, int], None] | None = None,
                  on_trial: Callable[[TrialRecord], None] | None = None) -> SavedSearch:
    """Search with the study stored in `out_dir` (see `default_storage`, unless `storage` says otherwise; its part counts in
    part_counts.json), then write the Pareto front's configs to out_dir/pareto (and remove the configs of trials no
    longer on it), or with `stats` compute the design-space distributions."""
    out_dir = Path(out_dir)
    result = search(space, objectives, constraints, trials=trials, seed=seed, sampler=sampler,
                    storage=storage or default_storage(out_dir),
                    study_name=study_name, workers=workers, settings=settings, convention=convention, stats=stats,
                    progress=progress, on_trial=on_trial, cache=output_path(out_dir, "part_counts.json"))
    configs = {} if stats else write_configs(result, space, output_path(out_dir, "pareto"))
    if not stats:
        remove_stale_configs(output_path(out_dir, "pareto"), configs.values())
    return SavedSearch(result, out_dir, configs, distributions(result) if stats else None)
