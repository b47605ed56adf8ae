"""Analyzers: params, flops, runtime. Each returns plain frozen result objects and never prints."""
