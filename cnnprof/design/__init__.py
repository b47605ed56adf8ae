"""Design with complexity: scaling sweeps, iso-complexity matching and budgeted design-space search.

Plain functions returning frozen results (no printing), built on count_params/count_flops and the
runtime benchmark. torch, optuna and matplotlib are imported inside the functions that need them.
"""
