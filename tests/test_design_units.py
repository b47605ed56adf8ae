"""Unit tests of the design library's parts: knob parsing, knob checks, objectives and constraints, the search loop.

Fast: no model is built except where a knob check resolves a spec; the search runs on synthetic points.
"""
import pytest

from cnnprof.cli.options import as_options
from cnnprof.design.knobs import check_knobs, user_callable
from cnnprof.design.metrics import Point, parse_constraint
from cnnprof.design.space import Knob, Space, parse_knob
from cnnprof.design.study import constraint_values, objective_values, sampler_kind
from cnnprof.design.sweep import grid, parse_axes
from cnnprof.errors import CnnprofError


class Bad(Exception):
    pass


def fail(key, why):
    return Bad(f"{key}: {why}")


# ----------------------------------------------------------------------------- knob parsing


def test_parse_knob_reads_each_distribution():
    assert parse_knob(fail, "k", "depth", {"type": "int", "low": 12, "high": 28, "step": 4}, 16) == \
        Knob("depth", "int", 12, 28, 4)
    w_a = parse_knob(fail, "k", "w_a", {"type": "float", "low": 8, "high": 256, "log": True}, 24.0)
    assert w_a == Knob("w_a", "float", 8.0, 256.0, None, True) and isinstance(w_a.low, float)
    assert parse_knob(fail, "k", "g", {"type": "categorical", "choices": [1, 2, 4]}, 8) == \
        Knob("g", "categorical", choices=(1, 2, 4))
    scaled = parse_knob(fail, "k", "stages.1.out_channels",
                        {"type": "categorical", "choices": [0.5, 1.0], "multiply": True, "divisor": 8}, 64)
    assert (scaled.multiply, scaled.divisor, scaled.choices) == (True, 8, (0.5, 1.0))


@pytest.mark.parametrize("spec, base, message", [
    (3, 1, "k: expected a mapping like {type: int, low: 1, high: 8}, got 3"),
    ({"type": "int", "low": 1, "high": 2, "hgih": 3}, 1, "k.hgih: unknown key; allowed: choices, divisor, high"),
    ({"type": "bool"}, 1, "k.type: 'bool' is not one of int, float, categorical"),
    ({"type": "int", "low": 1, "high": 2, "divisor": True}, 1, "k.divisor: expected a positive integer, got True"),
    ({"type": "int", "low": 1, "high": 2, "multiply": True}, "relu", "k.multiply: the base value 'relu' is not"),
    ({"type": "categorical", "choices": []}, 1, "k.choices: must be a non-empty list"),
    ({"type": "categorical", "choices": [1, 1]}, 1, "k.choices: has duplicates"),
    ({"type": "int", "low": 1.5, "high": 2}, 1, "k.low: expected an integer, got 1.5"),
    ({"type": "float", "low": 0.5, "high": None}, 1, "k.high: expected a number, got None"),
    ({"type": "float", "low": 2.0, "high": 1.0}, 1, "k: empty range: low 2.0 > high 1.0"),
    ({"type": "float", "low": 1.0, "high": 2.0, "step": 0.5, "log": True}, 1, "k.step: must be > 0, and cannot"),
    ({"type": "float", "low": 0.0, "high": 2.0, "log": True}, 1, "k.low: a log-uniform range needs low > 0"),
    ({"type": "int", "low": 96, "high": 225, "step": 32}, 1, "k.step: 225 - 96 is not a multiple of step 32"),
])
def test_parse_knob_names_the_offending_field(spec, base, message):
    with pytest.raises(Bad) as info:
        parse_knob(fail, "k", "x", spec, base)
    assert str(info.value).startswith(message)


def test_divisor_is_checked_before_the_base_value_and_the_type_before_both():
    # The first problem in the order a reader meets the keys: type, divisor, multiply, then the values.
    with pytest.raises(Bad, match="k.type"):
        parse_knob(fail, "k", "x", {"type": "x", "divisor": 0, "multiply": True}, "relu")
    with pytest.raises(Bad, match="k.divisor"):
        parse_knob(fail, "k", "x", {"type": "int", "divisor": 0, "multiply": True}, "relu")


# ----------------------------------------------------------------------------- knob checks and grids


def test_grid_varies_the_last_axis_fastest():
    assert grid({"w": [1, 0.5], "r": [224, 128]}) == [
        {"w": 1, "r": 224}, {"w": 1, "r": 128}, {"w": 0.5, "r": 224}, {"w": 0.5, "r": 128}]
    assert grid({}) == [{}]


def test_parse_axes_messages_name_the_parameter_the_cli_prints_as_set():
    assert parse_axes(["width_mult=1,0.75", "groups=32"]) == ({"width_mult": [1, 0.75]}, {"groups": 32})
    with pytest.raises(CnnprofError) as info:
        parse_axes(["width_mult"])
    assert str(info.value).startswith("`overrides='width_mult'`: expected KEY=V1[,V2,...]")
    assert as_options(str(info.value)) == \
        "--set 'width_mult': expected KEY=V1[,V2,...], e.g. --set width_mult=1,0.75,0.5"
    with pytest.raises(CnnprofError, match="given twice"):
        parse_axes(["k=1", "k=2"])


def test_knobs_of_a_factory_are_its_keywords():
    check_knobs("tests/test_design.py:wavy", ["k"])
    with pytest.raises(CnnprofError, match="unknown knob 'q'; the callable takes k$"):
        check_knobs("tests/test_design.py:wavy", ["q"])
    from tests.test_design import wavy

    found = user_callable("tests/test_design.py:wavy")
    assert found.__name__ == "wavy" and found.__doc__ == wavy.__doc__
    check_knobs("tests/test_design_units.py:any_keywords", ["width", "depth"])  # **kwargs: any name passes


def any_keywords(**kwargs):
    """A factory taking any keyword."""


def test_knobs_of_a_config_are_params_and_dotted_paths():
    check_knobs("mobilenet_v1", ["width_mult", "stages.2.depth"])
    with pytest.raises(CnnprofError, match="mobilenet_v1: unknown knob 'stages.99.depth'"):
        check_knobs("mobilenet_v1", ["stages.99.depth"])


# ----------------------------------------------------------------------------- objectives and constraints

POINT = Point((("w", 1),), params=2_000_000, macs=300_000_000, other_ops=1_000, acts=5_000_000)


def test_objective_values_follow_the_objectives_and_the_convention():
    assert objective_values(POINT, [("params", "minimize"), ("macs", "maximize")], "macc") == [2e6, 3e8]
    # nvidia: a multiply-accumulate is 2 FLOPs, plus the other ops.
    assert objective_values(POINT, [("flops", "minimize")], "nvidia") == [6e8 + 1e3]
    with pytest.raises(CnnprofError, match="metric 'latency' is not available"):
        objective_values(POINT, [("params", "minimize"), ("latency", "minimize")], "macc")


def test_constraint_values_are_optunas_relative_violations():
    cons = [parse_constraint(t) for t in ("macs<=400M", "params<=1M", "acts>=10M", "params<2M")]
    # macs: (300M - 400M) / 400M inside; params: (2M - 1M) / 1M over; acts: (10M - 5M) / 10M short;
    # params < 2M at exactly 2M is not satisfied, 0 away.
    assert constraint_values(POINT, cons, "macc") == [-0.25, 1.0, 0.5, 0.0]
    with pytest.raises(CnnprofError, match="metric 'latency' is not available"):
        constraint_values(POINT, [parse_constraint("latency<=15ms")], "macc")


def test_constraint_messages_name_the_parameter_the_cli_prints_as_constraint():
    with pytest.raises(CnnprofError) as info:
        parse_constraint("macs<400 apples")
    assert as_options(str(info.value)) == \
        "--constraint 'macs<400 apples': unit 'apples' does not fit macs; use one of k, K, M, G, T"


def test_auto_sampler_depends_on_the_objectives_and_stats():
    one, two = [("macs", "minimize")], [("macs", "minimize"), ("params", "minimize")]
    assert (sampler_kind("auto", one, False), sampler_kind("auto", two, False), sampler_kind("auto", two, True)) == \
        ("tpe", "nsga2", "random")
    assert sampler_kind("random", two, False) == "random"
    with pytest.raises(CnnprofError, match="unknown sampler 'grid'; choose one of auto, nsga2, tpe, random"):
        sampler_kind("grid", one, False)


# ----------------------------------------------------------------------------- the search loop


@pytest.fixture
def synthetic(monkeypatch):
    """A one-knob space (w = 1..10) whose points cost params = 100 w and macs = 1000 w, with no model built."""
    import cnnprof.design.search as search_module

    def fake(space, sample, settings, gate=(), convention="macc"):
        w = sample["w"]
        return Point(tuple(sample.items()), params=100 * w, macs=1000 * w, other_ops=0)

    monkeypatch.setattr(search_module, "evaluate_sample", fake)
    return Space("toy", "", "toy.yaml", "none", {}, (Knob("w", "int", 1, 10),))


def test_search_tells_constraints_and_keeps_the_feasible_front(synthetic):
    from cnnprof.design.search import search

    result = search(synthetic, [("params", "minimize"), ("macs", "maximize")], [parse_constraint("params<=500")],
                    trials=12, seed=0)
    assert len(result.trials) == 12 and result.evaluated == 12 and not result.interrupted
    for t in result.trials:  # a sample outside the budget is rejected on its count: every trial is inside
        w = t.point.knob("w")
        assert t.values == (100 * w, 1000 * w) and t.feasible and w <= 5 and not t.rejected
    # The rejected samples are kept apart, flagged, with their counts and no objective values; never counted.
    assert result.rejected and result.rejected_now == len(result.rejected)
    assert all(r.rejected and not r.feasible and r.values is None and r.point.params > 500 for r in result.rejected)
    numbers = sorted(t.number for t in (*result.trials, *result.rejected))
    assert numbers == list(range(12 + len(result.rejected)))
    # Every feasible w trades params for MACs, so each distinct one is on the front (its first trial only),
    # ordered by params.
    firsts = {}
    for t in result.trials:
        if t.feasible:
            firsts.setdefault(t.point.knob("w"), t.number)
    assert result.pareto == tuple(firsts[w] for w in sorted(firsts))


def test_search_checks_the_request_before_opening_a_study(synthetic):
    from cnnprof.design.search import search

    with pytest.raises(CnnprofError, match="^`trials` must be >= 1, got 0$"):
        search(synthetic, [("macs", "minimize")], trials=0)
    with pytest.raises(CnnprofError, match="give an objective"):
        search(synthetic, [], trials=2)
    with pytest.raises(CnnprofError) as info:
        search(synthetic, [("macs", "minimize")], [parse_constraint("latency<=15ms")], trials=2)
    assert as_options(str(info.value)) == \
        "metric 'latency' needs --bench (measure it) or --predict (predict it from the device profile)"
    stats = search(synthetic, [], trials=3, seed=1, stats=True)
    assert stats.objectives == (("macs", "minimize"),) and stats.sampler == "random"


def test_an_interrupted_search_keeps_the_told_trials_and_fails_the_rest(synthetic, monkeypatch, tmp_path):
    import optuna
    from optuna.trial import TrialState

    import cnnprof.design.search as search_module
    from cnnprof.design.study import open_storage

    real, calls = search_module.evaluate_sample, []

    def interrupted_in_the_second_batch(*job):
        calls.append(job)
        if len(calls) == search_module.BATCH + 3:
            raise KeyboardInterrupt
        return real(*job)

    monkeypatch.setattr(search_module, "evaluate_sample", interrupted_in_the_second_batch)
    storage = str(tmp_path / "study.log")  # a journal file
    result = search_module.search(synthetic, [("macs", "minimize")], trials=20, seed=0, storage=storage)
    batch = search_module.BATCH
    assert result.interrupted and result.evaluated == batch
    assert [t.number for t in result.trials] == list(range(batch))  # the failed ones do not count as done
    stored = optuna.load_study(study_name="toy", storage=open_storage(storage)).get_trials(deepcopy=False)
    assert [t.state for t in stored] == [TrialState.COMPLETE] * batch + [TrialState.FAIL] * batch
    monkeypatch.setattr(search_module, "evaluate_sample", real)
    resumed = search_module.search(synthetic, [("macs", "minimize")], trials=10, seed=0, storage=storage)
    assert resumed.evaluated == 2 and [t.number for t in resumed.trials] == [*range(batch), 16, 17]


def test_a_budget_that_leaves_nothing_stops_with_a_warning(synthetic, monkeypatch):
    import cnnprof.design.search as search_module

    monkeypatch.setattr(search_module, "REJECT_BASE", 10)
    result = search_module.search(synthetic, [("macs", "minimize")], [parse_constraint("params<=50")], trials=2,
                                  seed=0)
    limit = 10 + search_module.REJECT_PER_TRIAL * 2
    assert result.trials == () and len(result.rejected) == result.rejected_now == limit and not result.interrupted
    assert any(f"{limit} samples of this run fell outside params<=50; stopped with 0 of 2 trials" in w
               for w in result.warnings)
