"""Counting: one op trace of a model's forward pass on meta tensors, and the views over it.

trace.py records every aten op as an OpEvent (Tracer, a TorchDispatchMode) and run.py runs a model under it
(meta tensors, or once for real on the CPU); formulas/ and registry.py price each op (a public,
schema-aware registry), units.py counts a user's module as a whole. The views: flops.py (FlopCount),
traffic.py (bytes moved), params.py, acts.py, footprint.py (memory of a pass or a training step, over
liveness.py); group.py is the one group-by,
types.py decides layer types. Knows no zoo, config or CLI flag: it takes an nn.Module (or a source,
source.py) and inputs.
"""
