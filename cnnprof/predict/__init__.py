"""Prediction before running: device profiles and their cache (device.py), the roofline and the calibrated
per-op-type latency model over a traffic view of the op trace (latency.py), calibrated on micro-benchmarks
(calibration.py, microbench.py), and the table of layers measured on this device that it uses first (lut.py)."""
