"""Reports of `cnnprof sweep`, `cnnprof match` and `cnnprof search`, from results built by hand (nothing is
counted or searched), and their plots."""
import csv
import io
from dataclasses import replace

import pytest

from cnnprof.design.match import MatchResult, MatchRow
from cnnprof.design.metrics import Constraint, Point, Settings
from cnnprof.design.search import Distribution, SearchResult, TrialRecord
from cnnprof.design.sweep import SweepResult
from cnnprof.errors import CnnprofError
from cnnprof.report.design import check_plot_path, match_report, search_report, sweep_report, trial_rows
from tests.test_report import WIDTHS, narrow_text

A = Point((("width", 8), ("depth", 1)), params=322, macs=13904, acts=522)
B = Point((("width", 8), ("depth", 2)), params=900, macs=30000, acts=1000)
BAD = Point((("width", 16), ("depth", 1)), status="invalid", error="bad config")
C = Point((("width", 0.5), ("depth", 2)), params=1200, macs=50000, other_ops=100, acts=2000, latency_s=0.0021)
AXES = (("width", (8, 16)), ("depth", (1, 2)))
BENCH = Settings(scope="all", bench=True, batch_size=2)


def sweep(settings=Settings(), fixed=()):
    return SweepResult("tiny", AXES, fixed, settings, (A, B, BAD, C))


def search_result(**kw):
    trials = (TrialRecord(0, (("width", 8), ("depth", 1)), A, True, (13904.0, 322.0)),
              TrialRecord(1, (("width", 16), ("depth", 1)), BAD, False, None),
              TrialRecord(2, (("width", 0.5), ("depth", 2)), C, False, (50000.0, 1200.0)),
              TrialRecord(3, (("width", 8), ("depth", 2)), B, True, (30000.0, 900.0)))
    result = SearchResult("space.yaml", "space.yaml", "study1", "sqlite:///x.db", "tpe", 0,
                          (("macs", "minimize"), ("params", "minimize")), (Constraint("macs", "<=", 40000, "macs<=40k"),),
                          "macc", Settings(), trials, (0, 3), 4, 2.0)
    return replace(result, **kw)


DISTS = [Distribution("params", (322.0, 900.0, 1200.0)), Distribution("latency", (0.001, 0.002, 0.0021))]


# ----------------------------------------------------------------------------- sweep


def test_sweep_table_keeps_valid_points_and_notes_failures():
    report = sweep_report(sweep(), "macc")
    table = report.tables[0]
    assert table.title == ("Sweep of tiny — FLOPs: macc (1 MAC = 1 FLOP); scope: conv (convolution and linear "
                           "layers only)")
    assert [c.header for c in table.columns] == ["width", "depth", "Params", "MACs", "Acts"]  # no FLOPs: same as MACs
    assert [(r["width"], r["depth"]) for r in table.rows] == [(8, 1), (8, 2), (0.5, 2)]
    assert table.notes == ["width=16, depth=1: invalid: bad config"]
    text = report.render("table", 80)
    assert "13.90 k" in text and "30.00 k" in text and "0.5" in text and "1.20 k" in text
    assert [r["status"] for r in report.json_rows] == ["ok", "ok", "invalid", "ok"]
    assert report.json_rows[0] == {"model": "tiny", "width": 8, "depth": 1, "status": "ok", "params": 322,
                                   "macs": 13904, "flops": 13904, "acts": 522, "latency_ms": None, "error": None,
                                   "convention": "macc", "scope": "conv"}


def test_sweep_with_flops_latency_and_fixed_knobs():
    report = sweep_report(sweep(BENCH, (("groups", 2),)), "nvidia")
    table = report.tables[0]
    assert table.title.startswith("Sweep of tiny (groups=2) — FLOPs: nvidia (1 MAC = 2 FLOPs); scope: all")
    assert [c.header for c in table.columns][-3:] == ["FLOPs [nvidia]", "Acts", "Latency (ms)"]
    assert report.json_rows[3]["flops"] == 2 * 50000 + 100 and report.json_rows[3]["latency_ms"] == pytest.approx(2.1)
    assert "Latency: median forward pass on cpu, batch 2." in table.notes
    assert "100.10 k" in report.render("table", 100) and "2.10" in report.render("table", 100)
    assert next(csv.DictReader(io.StringIO(report.render("csv"))))["convention"] == "nvidia"


def test_a_sweep_prints_itself_without_the_cli():
    assert "Sweep of tiny" in str(sweep_report(sweep())) and "13.90 k" in str(sweep_report(sweep()))


# ----------------------------------------------------------------------------- match


def test_match_table_deviation_and_notes():
    rows = (MatchRow((("depth", 1),), 12, A, 13904.0, 0.0012, "bisection", "", ((8, 10000.0), (16, 20000.0))),
            MatchRow((("depth", 2),), None, None, None, None, "scan", "no value reaches the target", ((8, None),)))
    report = match_report(MatchResult("tiny", "width", "macs", "macc", 13887.0, "ref_net", None, Settings(), rows))
    table = report.tables[0]
    assert table.title == "Iso-macs: tiny's width closest to ref_net (13.89 k macs); scope conv"
    assert [c.header for c in table.columns] == ["depth", "width", "Params", "MACs", "macs vs target", "Search",
                                                 "Evals"]
    assert table.notes == ["depth=2: no value reaches the target"]
    text = report.render("table", 100)
    assert "+0.12%" in text and "bisection" in text and "13.90 k" in text
    assert report.json_rows[0]["evaluated"] == [[8, 10000.0], [16, 20000.0]]
    assert (report.json_rows[0]["model"], report.json_rows[0]["reference"], report.json_rows[0]["width"]) == (
        "tiny", "ref_net", 12)
    assert report.json_rows[1]["params"] is None and report.csv_rows[1]["evaluations"] == 1
    assert "evaluated" not in report.csv_rows[0]


def test_match_on_latency_shows_the_metric_in_ms():
    rows = (MatchRow((), 12, C, 0.0021, -0.02, "bisection", "", ((8, 0.001), (12, 0.0021))),)
    report = match_report(MatchResult("tiny", "width", "latency", "macc", 0.00214, "2.14ms", None, BENCH, rows))
    assert report.tables[0].title == "Iso-latency: tiny's width closest to 2.14ms (2.14 ms latency); scope all"
    text = report.render("table", 100)
    assert "2.10 ms" in text and "-2.00%" in text and report.json_rows[0]["latency_ms"] == pytest.approx(2.1)


# ----------------------------------------------------------------------------- search


def test_search_pareto_front_and_notes():
    report = search_report(search_result())
    front = report.tables[0]
    assert front.title == "Pareto front of space.yaml (minimize macs, minimize params; macs<=40k)"
    assert [r["trial"] for r in front.rows] == [0, 3] and len(report.json_rows) == 4
    assert front.notes == ["4 trials in study 'study1' (sqlite:///x.db); 1 invalid (failed trials), 1 outside the "
                           "constraints; sampler tpe, seed 0.",
                           "This run: 4 trials in 2.0 s (2.0 trials/s, 1 worker)."]
    text = report.render("table", 100)
    assert "13.90 k" in text and "30.00 k" in text and "50.00 k" not in text


def test_trial_rows_are_raw_numbers_of_every_trial():
    rows = trial_rows(search_result(), {3: "out/3.yaml"})
    assert [(r["trial"], r["status"], r["feasible"], r["pareto"]) for r in rows] == [
        (0, "ok", True, True), (1, "invalid", False, False), (2, "ok", False, False), (3, "ok", True, True)]
    assert rows[0]["minimize_macs"] == 13904.0 and rows[1]["minimize_params"] is None
    assert rows[3]["config"] == "out/3.yaml" and "config" not in rows[0]
    assert list(rows[0])[:6] == ["trial", "status", "feasible", "pareto", "width", "depth"]


def test_search_with_configs_interrupted_and_several_workers():
    report = search_report(search_result(interrupted=True, workers=2, constraints=()), {0: "out/0.yaml"})
    front = report.tables[0]
    assert front.title == "Pareto front of space.yaml (minimize macs, minimize params)"
    assert front.columns[-1].header == "Config" and "out/0.yaml" in report.render("table", 120)
    assert "(2.0 trials/s, 2 workers)." in front.notes[1]
    assert front.notes[-1] == "Interrupted: rerun the same command to resume the stored study."


def test_search_statistics_quantiles_and_feasible_share():
    report = search_report(search_result(), None, DISTS)
    stats = report.tables[0]
    assert stats.title == "Design-space statistics of space.yaml (4 samples, sampler tpe)"
    assert [c.header for c in stats.columns] == ["Metric", "Samples", "min", "p10", "p25", "p50", "p75", "p90", "max"]
    params, latency = stats.rows
    # p10 of (322, 900, 1200): 322 + 0.2 × (900 - 322) = 437.6; latency in ms
    assert params["q10"] == pytest.approx(437.6) and params["q100"] == 1200.0 and params["n"] == 3
    assert latency["metric"] == "latency (ms)" and latency["q50"] == pytest.approx(2.0)
    assert stats.notes[0] == "66.7% of valid samples satisfy macs<=40k."  # trials 0 and 3 of the valid 0, 2, 3
    text = report.render("table", 100)
    assert "437.60" in text and "1.20 k" in text and "2.10" in text
    quiet = search_report(search_result(constraints=(), evaluated=0), None, DISTS)
    assert quiet.tables[0].notes == ["4 trials in study 'study1' (sqlite:///x.db); 1 invalid (failed trials), 1 "
                                     "outside the constraints; sampler tpe, seed 0."]


@pytest.mark.parametrize("width", WIDTHS)
def test_narrow_terminals_keep_the_numbers(width):
    assert "13.90 k" in narrow_text(sweep_report(sweep(BENCH), "nvidia"), width)
    rows = (MatchRow((("depth", 1),), 12, A, 13904.0, 0.0012, "bisection", "", ((8, 10000.0),)),)
    text = narrow_text(match_report(MatchResult("tiny", "width", "macs", "macc", 13887.0, "ref", None, Settings(),
                                                rows)), width)
    assert "+0.12%" in text
    assert "30.00 k" in narrow_text(search_report(search_result(), {0: "out/0.yaml"}), width)
    assert "437.60" in narrow_text(search_report(search_result(), None, DISTS), width)


# ----------------------------------------------------------------------------- plots


def test_plot_path_must_be_an_image_file():
    check_plot_path(None)
    check_plot_path("out.svg")
    with pytest.raises(CnnprofError, match=r"^--plot out.txt: use a .png, .svg or .pdf file name$"):
        check_plot_path("out.txt")


def test_plots_are_written(tmp_path):
    from cnnprof.report.design import plot_match, plot_pareto, plot_stats, plot_sweep

    plot_sweep(sweep(BENCH), str(tmp_path / "sweep.svg"), y="latency")
    rows = (MatchRow((("depth", 1),), 12, A, 13904.0, 0.0012, "bisection", "", ((8, 10000.0), (16, 20000.0))),)
    plot_match(MatchResult("tiny", "width", "macs", "macc", 13887.0, "ref", None, Settings(), rows),
               str(tmp_path / "match.svg"))
    plot_pareto(search_result(), str(tmp_path / "front.svg"))
    plot_pareto(search_result(objectives=(("macs", "minimize"),)), str(tmp_path / "one.svg"))
    plot_stats(search_result(), DISTS, str(tmp_path / "edf.svg"))
    for name in ("sweep", "match", "front", "one", "edf"):
        assert (tmp_path / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    from cnnprof.report.render import OutputError

    # A write that fails after the work is an output error (exit 1); check_plot_path refuses it before (exit 2).
    with pytest.raises(OutputError, match="cannot write"):
        plot_pareto(search_result(), str(tmp_path / "missing" / "front.svg"))
    with pytest.raises(CnnprofError, match="no such folder"):
        check_plot_path(str(tmp_path / "missing" / "front.svg"))


def test_the_pareto_plot_draws_the_samples_rejected_on_their_counts(tmp_path, monkeypatch):
    """Rejected samples have no objective values (never evaluated); the plot places them by their counts."""
    import cnnprof.report.design as report_design

    far = Point((("width", 64), ("depth", 2)), params=5000, macs=90000, acts=3000)
    result = search_result(rejected=(TrialRecord(4, far.knobs, far, False, None, rejected=True),))
    assert result.counted_values(result.rejected[0]) == (90000.0, 5000.0)
    drawn = []
    real = report_design._counted_xy
    monkeypatch.setattr(report_design, "_counted_xy", lambda r, t: drawn.append(real(r, t)) or drawn[-1])
    report_design.plot_pareto(result, str(tmp_path / "front.svg"))
    assert drawn == [(0.09, 0.005)]  # millions, as the axes
    assert "rejected on their counts (1)" in (tmp_path / "front.svg").read_text()
