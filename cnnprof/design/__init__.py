"""Design with complexity: scaling sweeps, iso-complexity matching and budgeted design-space search.

Plain functions returning frozen results (no printing), built on count_params/count_flops and the
runtime benchmark. torch, optuna and matplotlib are imported inside the functions that need them.

metrics: what a point costs (Settings, Point, the metric registry, constraints); knobs: which knobs a model
has; sweep: grids; match: iso-complexity; space: design-space files; study: the Optuna side of a search;
search: the search loop, its results and the configs it writes.
"""
