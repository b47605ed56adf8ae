"""Profiles of one model and comparisons of several: params, FLOPs, acts and latency side by side."""
