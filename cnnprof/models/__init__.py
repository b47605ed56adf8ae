"""Layers, blocks (registered by name) and the one config -> nn.Module builder."""
