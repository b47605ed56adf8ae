"""The fast path of design searches: a config-built model counted as a sum of memoised part counts.

The sum must be the full count, exactly (a search's numbers are the product): checked on every model a search
samples from both shipped spaces, in both scopes, at another batch size and resolution, and for the latency
predicted from a calibrated device profile.
"""
import json
from dataclasses import replace
from pathlib import Path

import pytest

from cnnprof.design.memo import MEMO, PartCounts, code_version, count_config, load_cache, save_cache
from cnnprof.design.metrics import Settings, evaluate, parse_constraint
from cnnprof.design.space import load_space
from cnnprof.predict.device import DeviceProfile, TypeFit

GOLDEN = Path(__file__).parent / "golden_cli"
FIELDS = ("status", "params", "macs", "other_ops", "acts")


def calibrated_profile() -> DeviceProfile:
    """The synthetic calibrated CPU profile the golden files use (every overhead term is non-zero)."""
    data = json.loads((GOLDEN / "fixed_cpu_profile.json").read_text())
    data["calibration"] = {k: TypeFit(**v) for k, v in data["calibration"].items()}
    return DeviceProfile(**data)


def counts(point):
    return tuple(getattr(point, f) for f in FIELDS)


@pytest.mark.parametrize("space_name", ["regnet", "mobilenet_v2"])
def test_part_sums_are_the_full_count_of_every_sampled_model(space_name):
    from cnnprof.design.search import search

    space = load_space(f"configs/spaces/{space_name}.yaml")
    profile = calibrated_profile()
    memo = PartCounts()
    looked_up = MEMO.hits + MEMO.misses
    result = search(space, [("params", "minimize")], [parse_constraint("macs<=400M")], trials=6, seed=0,
                    sampler="random")
    sampled = [*result.trials, *result.rejected]
    assert len(sampled) >= 6 and MEMO.hits + MEMO.misses > looked_up  # the search counted through the memo
    for t in sampled:  # the search counted each of them through the memo: it reported the full count
        config = space.config(dict(t.sample))
        assert counts(t.point) == counts(evaluate(config, {}, Settings(), knobs=dict(t.sample)))
        for settings in () if t.rejected else (Settings(scope="all", profile=profile), Settings(batch_size=2,
                                                                                               resolution=160)):
            full = evaluate(config, {}, settings, knobs=dict(t.sample))
            fast = count_config(config, settings, dict(t.sample), memo)
            assert full.ok and counts(fast) == counts(full)
            if settings.profile is not None:
                assert fast.latency_s == pytest.approx(full.latency_s, rel=1e-12)
    assert memo.hits > 0  # blocks repeat within and across models


def test_the_fast_path_steps_aside_where_it_does_not_apply():
    from cnnprof.inputs import InputSpec

    space = load_space("configs/spaces/regnet.yaml")
    config = space.config({})
    memo = PartCounts()
    two_inputs = Settings(inputs=(InputSpec((1, 3, 64, 64)), InputSpec((1, 3, 64, 64))))
    assert count_config(config, two_inputs, {}, memo) is None and not memo.table
    one = count_config(config, Settings(inputs=(InputSpec((1, 3, 64, 64)),)), {}, memo)
    assert counts(one) == counts(evaluate(config, {}, Settings(inputs=(InputSpec((1, 3, 64, 64)),))))
    bad = replace(config, stages=(replace(config.stages[0], blocks=(replace(config.stages[0].blocks[0],
                                                                               block="nosuch"),)),))
    assert count_config(bad, Settings(), {}, memo) is None  # a failing part: the full count words the error
    assert evaluate(bad, {}, Settings()).status == "invalid"


def test_the_cache_file_round_trips_and_stale_or_bad_files_are_not_used(tmp_path):
    space = load_space("configs/spaces/mobilenet_v2.yaml")
    config = space.config({"stages.2.kernel_size": 5})
    memo = PartCounts()
    first = count_config(config, Settings(), {}, memo)
    path = tmp_path / "part_counts.json"
    assert save_cache(path, memo) is None and not memo.added
    again = PartCounts()
    assert load_cache(path, again) is None and len(again.table) == len(memo.table)
    assert counts(count_config(config, Settings(), {}, again)) == counts(first) and again.misses == 0
    data = json.loads(path.read_text())
    assert data["code"] == code_version()
    for stale in ({**data, "code": "0" * 16}, {**data, "version": 0}):  # other counting code: silently not used
        path.write_text(json.dumps(stale))
        fresh = PartCounts()
        warning = load_cache(path, fresh)
        assert not fresh.table and (warning is None) == (stale["version"] == data["version"])
    for bad in ("[1, 2", json.dumps({**data, "entries": [["k", [1], "conv", [1], -5, 0, 0, 0, 0, 0]]})):
        path.write_text(bad)
        fresh = PartCounts()
        warning = load_cache(path, fresh)
        assert not fresh.table and "not used" in warning and "measured again" in warning
    assert load_cache(tmp_path / "absent.json", PartCounts()) is None


def test_the_cache_is_written_in_place_never_through_a_planted_link(tmp_path):
    memo = PartCounts()
    count_config(load_space("configs/spaces/regnet.yaml").config({}), Settings(), {}, memo)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "part_counts.json.tmp").symlink_to(outside)
    assert save_cache(out / "part_counts.json", memo) is None
    assert outside.read_text() == "keep" and not (out / "part_counts.json").is_symlink()
    assert load_cache(out / "part_counts.json", PartCounts()) is None
