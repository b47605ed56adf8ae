"""The report of one result object, for `print(result)` and `result.to_dict()` (cnnprof.results.Printable).

Each result type maps to the report builder its CLI command uses, with that command's defaults, so that
the Python object prints the table and serialises to the JSON row the CLI shows for it.
"""
from __future__ import annotations

from typing import Any, Callable

from cnnprof.report.render import Report


def _params(r: Any) -> Report:
    from cnnprof.report.counts import params_report

    return params_report([(r.model, r)])


def _flops(r: Any) -> Report:
    from cnnprof.report.counts import flops_report

    return flops_report([(r, r.params, None)])


def _bench(r: Any) -> Report:
    from cnnprof.report.bench import bench_report

    return bench_report([r])


def _roofline(r: Any) -> Report:
    from cnnprof.report.roofline import roofline_report

    return Report(*roofline_report([r], "type"))


def _device(r: Any) -> Report:
    from cnnprof.report.roofline import device_report

    return Report(*device_report(r))


def _sweep(r: Any) -> Report:
    from cnnprof.report.design import sweep_report

    return Report(*sweep_report(r))


def _match(r: Any) -> Report:
    from cnnprof.report.design import match_report

    return Report(*match_report(r))


def _search(r: Any) -> Report:
    from cnnprof.report.design import search_report

    return Report(*search_report(r))


def _memory(r: Any) -> Report:
    from cnnprof.report.memory import memory_report

    return memory_report([r])


BUILDERS: dict[str, Callable[[Any], Report]] = {
    "ParamCount": _params, "FlopCount": _flops, "BenchResult": _bench, "LatencyPrediction": _roofline,
    "DeviceProfile": _device, "SweepResult": _sweep, "MatchResult": _match, "SearchResult": _search,
    "MemoryEstimate": _memory,
}


def report_of(result: Any) -> Report:
    """The Report of a result object, as its CLI command shows it."""
    builder = BUILDERS.get(type(result).__name__)
    if builder is None:
        raise TypeError(f"no report for a {type(result).__name__}")
    return builder(result)
