"""The per-command report builders in one place: results in, a Report (tables, JSON rows, CSV rows) out.

Each command family has its module: counts (params, flops), compare, bench, zoo (list); roofline and design
hold the others.
"""
from cnnprof.report.bench import bench_flags, bench_json, bench_report, breakdown_rows, ratio_json, ratio_text
from cnnprof.report.compare import compare_report, compare_rows
from cnnprof.report.counts import flops_report, params_report
from cnnprof.report.labels import CONVENTION_TEXT, SCOPE_TEXT
from cnnprof.report.render import Report
from cnnprof.report.zoo import zoo_report

__all__ = ["CONVENTION_TEXT", "SCOPE_TEXT", "Report", "bench_flags", "bench_json", "bench_report", "breakdown_rows",
           "compare_report", "compare_rows", "flops_report", "params_report", "ratio_json", "ratio_text",
           "zoo_report"]
