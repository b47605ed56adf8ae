"""How titles name the counting conventions and scopes (shared by the count, compare and design reports)."""

CONVENTION_TEXT = {"macc": "macc (1 MAC = 1 FLOP)", "nvidia": "nvidia (1 MAC = 2 FLOPs)"}
SCOPE_TEXT = {"conv": "conv (convolution and linear layers only)",
              "all": "all (conv, linear, norm, activations, pooling, element-wise)"}
