"""Timing: one measurement loop (timer.py) under one device_settings context (settings.py), statistics
(stats.py), and what is built on them: bench (runtime.py), interleaved rounds (interleave.py), the per-type
breakdown (breakdown.py). Results hold raw samples (results.py); nothing here prints."""
