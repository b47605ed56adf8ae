"""The Optuna side of a search: storage, sampler, the study and its checks, and telling trials their costs.

A trial's objective values and constraint values are plain functions of its Point (`objective_values`,
`constraint_values`); everything that talks to Optuna is here, imported lazily.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, Sequence

from cnnprof.design.metrics import Constraint, Point, metric_value
from cnnprof.design.space import Space
from cnnprof.design.storage import open_storage, redacted  # open_storage: where callers have always found it
from cnnprof.errors import CnnprofError, first_line, parameter

SAMPLERS = ("auto", "nsga2", "tpe", "random")
STALE = "cnnprof_stale"  # user attribute of a trial failed because the process running it died
POINT_FIELDS = ("status", "error", "params", "macs", "other_ops", "acts", "latency_s")


@dataclass(frozen=True)
class TrialRecord:
    """One trial of the study: the sampled knob values and what they cost."""

    number: int
    sample: tuple[tuple[str, Any], ...]
    point: Point
    feasible: bool  # valid and within every constraint
    values: tuple[float, ...] | None  # objective values (None for a failed or rejected trial)
    rejected: bool = False  # outside a constraint on a counted metric: not counted against the trials asked for


def sampler_kind(sampler: str, objectives: Sequence[tuple[str, str]], stats: bool) -> str:
    """The sampler "auto" stands for: random for statistics, NSGA-II for several objectives, TPE for one."""
    if sampler not in SAMPLERS:
        raise CnnprofError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if sampler != "auto":
        return sampler
    return "random" if stats else "nsga2" if len(objectives) > 1 else "tpe"


def make_sampler(kind: str, seed: int | None, constraints: Sequence[Constraint]) -> Any:
    """An Optuna sampler of this kind, seeded, aware of the constraints."""
    import optuna

    # Optuna >= 5 reads constraints set on the trial (Trial.set_constraint); older ones need constraints_func.
    legacy = constraints and not hasattr(optuna.trial.Trial, "set_constraint")
    cf = partial(_stored_constraints, len(constraints)) if legacy else None
    if kind == "nsga2":
        return _nsga2_class()(seed=seed, constraints_func=cf)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=cf, multivariate=True)
    return optuna.samplers.RandomSampler(seed=seed)


@lru_cache(maxsize=None)
def _nsga2_class() -> type:
    import optuna

    class NSGAII(optuna.samplers.NSGAIISampler):
        """Optuna's NSGA-II, remembering each generation's parents: Optuna stores their ids, then finds them by
        scanning every trial of the study for every sample it draws (a cost that grows with the square of the
        trials). Parents are finished trials, which never change, so the list is kept per (study, generation)."""

        def get_parent_population(self, study: Any, generation: int) -> list:
            cache = self.__dict__.setdefault("_cnnprof_parents", {})
            key = (id(study._storage), study._study_id, generation)
            if key not in cache:
                cache[key] = super().get_parent_population(study, generation)
            return cache[key]

    return NSGAII


def _stored_constraints(count: int, frozen: Any) -> list[float]:
    return list(frozen.user_attrs.get("constraints", [1.0] * count))


def open_study(space: Space, objectives: Sequence[tuple[str, str]], storage: str | None, study_name: str,
               sampler: Any, constraints: Sequence[Constraint] = ()) -> tuple[Any, list[str]]:
    """Create the study, or load the stored one after checking it searches this space for these objectives:
    (study, warnings)."""
    study = _create_study(storage, study_name, sampler, objectives)
    storage = redacted(storage)  # shown in messages from here on
    metrics = [m for m, _ in objectives]
    stored = [d.name.lower() for d in study.directions]
    if stored != [d for _, d in objectives] or study.user_attrs.get("objectives", metrics) != metrics:
        raise CnnprofError(f"study {study_name!r} in {storage} was made for other objectives "
                           f"({study.user_attrs.get('objectives')}); use another --study-name or --out")
    # The space is identified by its content (the fingerprint), not its path: a moved space file resumes.
    warnings = check_fingerprint(study, fingerprint(space, objectives, constraints),
                                 f"study {study_name!r} in {storage or 'memory'}")
    study.set_user_attr("objectives", metrics)
    study.set_user_attr("space", space.source)
    return study, warnings


def _create_study(given: str | None, study_name: str, sampler: Any, objectives: Sequence[tuple[str, str]]) -> Any:
    """optuna.create_study, loading a stored study; on a shared database, tried again when another process was
    creating the tables or the study at the same moment (both may start at once)."""
    import time

    import optuna

    storage = redacted(given)
    for attempt in range(3):
        try:
            return optuna.create_study(storage=open_storage(given), study_name=study_name, sampler=sampler,
                                       directions=[d for _, d in objectives], load_if_exists=True)
        except CnnprofError:
            raise
        except ValueError as exc:  # e.g. directions differ from the stored study's
            raise CnnprofError(f"study {study_name!r}: {first_line(exc)}") from None
        except ModuleNotFoundError as exc:
            raise CnnprofError(f"{parameter('storage', storage)}: needs the database driver {exc.name!r} "
                               f"(pip install 'cnnprof[distributed]' for PostgreSQL)") from None
        except Exception as exc:  # noqa: BLE001 - a bad storage URL, an unreachable database, a race
            racing = type(exc).__name__ in ("IntegrityError", "ProgrammingError")  # SQLAlchemy's: tables made twice
            if attempt == 2 or not racing:
                raise CnnprofError(f"{parameter('storage', storage)}: {type(exc).__name__}: {first_line(exc)}") \
                    from None
            time.sleep(0.5 + attempt)


def fingerprint(space: Space, objectives: Sequence[tuple[str, str]], constraints: Sequence[Constraint]) -> dict:
    """What a study searches, stored in its user attributes: a short description (base config, each knob's
    distribution, objectives, constraints) and its hash."""
    description = {
        "base": str(space.base),
        "base_hash": _digest(space.raw)[:12],
        "knobs": {k.name: _describe(k) for k in space.knobs},
        "objectives": [f"{d} {m}" for m, d in objectives],
        "constraints": [f"{c.metric}{c.op}{c.bound:g}" for c in constraints],
    }
    return {"hash": _digest(description), "description": description}


def check_fingerprint(study: Any, new: dict, what: str) -> list[str]:
    """Refuse to resume a study made for another space or other objectives (one line naming what changed); a
    study without a stored fingerprint (an older cnnprof's) resumes with a warning. Stored attributes are data."""
    stored = study.user_attrs.get("fingerprint")
    warnings = []
    if stored is None and study.get_trials(deepcopy=False):
        warnings.append(f"{what} stores no description of its space (made by an older cnnprof): resuming "
                        f"without checking that the space and objectives are the same")
    elif stored is not None and not (isinstance(stored, dict) and stored.get("hash") == new["hash"]):
        changes = _changes(stored.get("description") if isinstance(stored, dict) else None, new["description"])
        if changes:
            raise CnnprofError(f"{what} was made for another search: {'; '.join(changes)}; use another "
                               f"--study-name or --out")
        warnings.append(f"{what}: its stored hash does not match its stored description (edited?), which matches")
    study.set_user_attr("fingerprint", new)
    return warnings


def _changes(old: Any, new: dict) -> list[str]:
    """What differs between a stored description (any data) and this search's, in words."""
    if not isinstance(old, dict):
        return ["its stored description is unreadable"]
    changes = []
    if old.get("base") != new["base"]:
        changes.append(f"base config {_short(old.get('base'))} -> {_short(new['base'])}")
    elif old.get("base_hash") != new["base_hash"]:
        changes.append(f"base config {_short(new['base'])} was edited")
    knobs = old.get("knobs") if isinstance(old.get("knobs"), dict) else {}
    for name in sorted(set(map(str, knobs)) | set(new["knobs"])):
        was, now = knobs.get(name), new["knobs"].get(name)
        if was is None:
            changes.append(f"knob {_short(name)} added")
        elif now is None:
            changes.append(f"knob {_short(name)} removed")
        elif was != now:
            changes.append(f"knob {_short(name)} changed: {_short(was)} -> {_short(now)}")
    for key in ("objectives", "constraints"):
        if old.get(key) != new[key]:
            changes.append(f"{key} {_short(old.get(key))} -> {_short(new[key])}")
    return changes


def _describe(knob: Any) -> str:
    if knob.type == "categorical":
        text = f"categorical {list(knob.choices)!r}"
    else:
        text = f"{knob.type} [{knob.low!r}, {knob.high!r}]" + (f" step {knob.step!r}" if knob.step else "")
        text += " log" if knob.log else ""
    return text + (f" multiply divisor {knob.divisor}" if knob.multiply else "")


def _digest(data: Any) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def finished_trials(study: Any) -> list[Any]:
    """Finished trials that were evaluated: a trial failed by an interruption does not use up the budget."""
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False, states=finished) if counts(t)]


def counts(t: Any) -> bool:
    """Whether a finished trial counts: it was evaluated (its counts are stored), and not failed as stale (a
    process killed between storing the counts and telling the state: the sample is run again)."""
    return "cnnprof" in t.user_attrs and STALE not in t.user_attrs


def accepted(t: Any) -> bool:
    """Whether a finished trial counts against the trials asked for: it counts, and was not rejected by a
    constraint on its counts (a rejected sample is stored, pruned, for the sampler, but uses up nothing)."""
    return counts(t) and not (isinstance(t.user_attrs["cnnprof"], dict) and t.user_attrs["cnnprof"].get("rejected"))


def objective_values(point: Point, objectives: Sequence[tuple[str, str]], convention: str) -> list[float]:
    """The objectives' values at a valid point, in order; a metric this build cannot give raises."""
    values = [metric_value(point, m, convention) for m, _ in objectives]
    missing = next((m for (m, _), v in zip(objectives, values) if v is None), None)
    if missing is not None:
        raise CnnprofError(f"metric {missing!r} is not available in this build")
    return values


def constraint_values(point: Point, constraints: Sequence[Constraint], convention: str) -> list[float]:
    """Optuna's constraint values at a valid point: > 0 how far outside (relative to the bound), else <= 0."""
    out = []
    for c in constraints:
        v = metric_value(point, c.metric, convention)
        if v is None:
            raise CnnprofError(f"metric {c.metric!r} is not available in this build")
        out.append(c.violation(v) if not c.satisfied(v) else min(0.0, c.violation(v)))
    return out


def tell(study: Any, trial: Any, point: Point, objectives: Sequence[tuple[str, str]],
         constraints: Sequence[Constraint], convention: str, rejected: bool = False) -> Any:
    """Record a trial's counts and tell Optuna its objectives and constraints, in the working study (an invalid
    point is a failed trial; a `rejected` one, outside a constraint on its counts, is pruned with its constraint
    values, so a constrained sampler learns where the budget ends); the frozen trial, which `finish_stored` then
    stores (and which another process may have failed as stale meanwhile: see there)."""
    from optuna.trial import TrialState

    # One attribute: one write when the trial is stored (each a database round trip).
    trial.set_user_attr("cnnprof", {**{name: getattr(point, name) for name in POINT_FIELDS},
                                    **({"rejected": True} if rejected else {})})
    if rejected:
        _set_constraints(trial, constraints, [_violation(point, c, convention) for c in constraints])
        return study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
    if not point.ok:
        return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    try:
        values = objective_values(point, objectives, convention)
        cons = constraint_values(point, constraints, convention)
    except CnnprofError:
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    _set_constraints(trial, constraints, cons)
    return study.tell(trial, values, skip_if_finished=True)


def _set_constraints(trial: Any, constraints: Sequence[Constraint], values: Sequence[float]) -> None:
    if hasattr(trial, "set_constraint"):  # Optuna >= 5
        for c, value in zip(constraints, values):
            trial.set_constraint(c.text, value)
    else:
        trial.set_user_attr("constraints", list(values))


def _violation(point: Point, c: Constraint, convention: str) -> float:
    """A constraint's value for Optuna at a rejected point; 0 where the metric was not measured (not run)."""
    v = metric_value(point, c.metric, convention)
    return 0.0 if v is None else c.violation(v) if not c.satisfied(v) else min(0.0, c.violation(v))


def record(t: Any, constraints: Sequence[Constraint]) -> TrialRecord:
    """A stored trial as a TrialRecord: its point rebuilt from the stored counts, feasible within all constraints."""
    attrs = t.user_attrs["cnnprof"]
    point = Point(tuple(t.params.items()), **{k: attrs.get(k) for k in POINT_FIELDS})
    feasible = point.ok and t.values is not None and all(
        c.satisfied(metric_value(point, c.metric)) for c in constraints)
    return TrialRecord(t.number, point.knobs, point, feasible, tuple(t.values) if t.values is not None else None,
                       rejected=attrs.get("rejected") is True)


# ----------------------------------------------------------------------------- the working study and the stored one
#
# The sampler works on an in-memory copy of the study (the working study): Optuna's samplers read every trial of the
# study for every sample they draw, which on a stored study is a storage read each (a journal replay, a database
# query), so a 10,000-trial search spent most of its time there. The stored study still holds every trial, and
# holds it as the other processes sharing it need it: a trial is created there RUNNING with its sampled knobs in one
# write as it is asked (so trial numbers, the exact fill and stale recovery work across processes as before), and
# finished there with its counts as it is told; finished trials other processes store are copied into the working
# study once a batch, so every sampler learns from the whole study.


@dataclass
class Asked:
    """A trial being run: the working study's trial (what the sampler drew) and its twin in the stored study."""

    trial: Any  # optuna.Trial of the working study
    trial_id: int  # in the stored study
    number: int  # in the stored study: the number users see (trials.json, configs' names)
    sample: dict[str, Any]
    stored_attrs: frozenset[str]  # system attributes the stored trial was created with


def working_study(sampler: Any, objectives: Sequence[tuple[str, str]]) -> Any:
    """The in-memory study the sampler draws from."""
    import optuna

    return optuna.create_study(sampler=sampler, directions=[d for _, d in objectives])


def mirror(work: Any, trials: Sequence[Any]) -> None:
    """Copy finished trials of the stored study (other processes', or a resumed study's) into the working study."""
    for t in trials:
        work.add_trial(t)


def ask_stored(store: Any, work: Any, space: Space, waiting: Any = None) -> Asked | None:
    """Draw a sample in the working study and create its trial, RUNNING, in the stored study (one write); with
    `waiting` (a queued trial of the stored study: a stale trial's sample to run again) take that trial instead and
    draw its fixed knobs, or None when another process took it first."""
    import datetime

    from optuna.trial import FrozenTrial, TrialState

    if waiting is not None:
        if not store._storage.set_trial_state_values(waiting._trial_id, state=TrialState.RUNNING):
            return None
        work.enqueue_trial(dict(waiting.system_attrs.get("fixed_params", {})), user_attrs=dict(waiting.user_attrs))
    trial = work.ask()
    sample = {k.name: k.suggest(trial) for k in space.knobs}
    frozen = work._storage.get_trial(trial._trial_id)
    attrs = {k: v for k, v in frozen.system_attrs.items() if k != "fixed_params"}
    if waiting is not None:
        for name, dist in frozen.distributions.items():
            store._storage.set_trial_param(waiting._trial_id, name, dist.to_internal_repr(frozen.params[name]), dist)
        for key, value in attrs.items():
            store._storage.set_trial_system_attr(waiting._trial_id, key, value)
        return Asked(trial, waiting._trial_id, waiting.number, sample, frozenset(attrs))
    template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                           datetime_start=datetime.datetime.now(), datetime_complete=None, params=frozen.params,
                           distributions=frozen.distributions, user_attrs={}, system_attrs=attrs,
                           intermediate_values={}, trial_id=-1)
    trial_id = store._storage.create_new_trial(store._study_id, template_trial=template)
    return Asked(trial, trial_id, store._storage.get_trial_number_from_id(trial_id), sample, frozenset(attrs))


def finish_stored(store: Any, asked: Asked, frozen: Any) -> bool:
    """Store a trial told in the working study: its attributes first (its counts: see `counts`), then its state and
    values; False when another process failed it as stale meanwhile (the stored study refuses to finish it, or, when
    the two raced, the trial is finished but marked stale, so it does not count)."""
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        for key, value in frozen.user_attrs.items():
            store._storage.set_trial_user_attr(asked.trial_id, key, value)
        for key, value in frozen.system_attrs.items():
            if key not in asked.stored_attrs and key != "fixed_params":
                store._storage.set_trial_system_attr(asked.trial_id, key, value)
        store._storage.set_trial_state_values(asked.trial_id, state=frozen.state, values=frozen.values)
    except UpdateFinishedTrialError:
        return False
    return STALE not in store._storage.get_trial(asked.trial_id).user_attrs


def fail_stored(store: Any, work: Any, asked: Asked) -> None:
    """Give a trial back: failed without counts in both studies, so it uses up nothing."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    work.tell(asked.trial, state=TrialState.FAIL, skip_if_finished=True)
    try:
        store._storage.set_trial_state_values(asked.trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        pass
