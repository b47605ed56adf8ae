"""Results -> rich tables, JSON, CSV, Markdown. The only place that formats numbers.

render.py holds Table, Column, the number formatters and Report; every builder below takes result objects
(and the settings that shaped them) and returns a Report, which prints itself (`str(report)`,
`report.render("json")`) or is written to stdout by `emit(fmt, *report)`:
counts.py (params_report, flops_report), compare.py (compare_rows, compare_report), bench.py (bench_report),
builders.py (report_of: the report of one result object, for print(result) and to_dict()),
zoo.py (zoo_report), roofline.py (device_report, roofline_report), design.py (sweep_report, match_report,
search_report). tables.py gathers the command-table builders for the CLI.
"""
