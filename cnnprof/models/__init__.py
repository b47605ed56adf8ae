"""Models as data: configs (config.py, schema.py, sections.py, yaml_input.py), the zoo registry (zoo.py),
model specs (spec.py), and the one config -> nn.Module builder over registered layers and blocks. Imports
nothing from counting, timing, predict or the CLI."""
