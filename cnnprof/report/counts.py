"""`cnnprof params` and `cnnprof flops`: counts per model and their breakdowns (by stage, type, layer, op)."""
from __future__ import annotations

from typing import Any, Sequence

from cnnprof.counting.types import module_depth
from cnnprof.report.labels import CONVENTION_TEXT, SCOPE_TEXT
from cnnprof.report.render import Column, Report, Table, integer, percent, shape, si


def _share(part: int, total: int) -> float:
    return part / total if total else 0.0


def _shape_or_dash(value: Any) -> str:
    return shape(value) if value else "-"


def _indent(name: str) -> str:
    if name == "(model)":
        return name
    return "  " * module_depth(name) + name


def _shape_cells(row: dict[str, Any], shapes: dict[str, tuple], name: str) -> None:
    """in_shape and out_shape of module `name` (None where the counted pass did not see it)."""
    i, o = shapes.get(name, (None, None))
    row["in_shape"], row["out_shape"] = (list(i) if i else None), (list(o) if o else None)


# ----------------------------------------------------------------------------- params


def params_report(results: list[tuple[Any, ...]], by: str | None = None, depth: int | None = None) -> Report:
    """results: (model label, ParamCount) or (label, ParamCount, {module: (input shape, output shape)});
    by: None, "stage", "type" or "layer" (one breakdown table per model), depth: deepest layer shown."""
    main = Table("Parameters", [
        Column("model", "Model", justify="left"), Column("params", "Params", integer),
        Column("size", "Params (≈)", si), Column("trainable_params", "Trainable", integer),
        Column("non_trainable_params", "Non-trainable", integer),
    ], [])
    tables, json_rows, csv_rows = [main], [], []
    for label, pc, *extra in results:
        shapes = extra[0] if extra and extra[0] else None
        row = {"model": label, "params": pc.total, "trainable_params": pc.trainable,
               "non_trainable_params": pc.non_trainable}
        main.rows.append({**row, "size": pc.total})
        if pc.packed:
            main.notes.append(_packed_note(label, pc.packed))
        if by:
            rows = [{"name": name, "params": n, "share": _share(n, pc.total)} for name, n in _param_items(pc, by, depth)]
            if by == "layer" and shapes:
                for r in rows:
                    _shape_cells(r, shapes, "" if r["name"] == "(model)" else r["name"])
            row[f"by_{by}"] = rows
            csv_rows += [{"model": label, "by": by, **r} for r in rows]
            tables.append(_params_table(label, by, rows, bool(shapes)))
        else:
            csv_rows.append(row)
        json_rows.append({**row, "packed_params": dict(pc.packed)} if pc.packed else row)
    return Report(tables, json_rows, csv_rows)


def _packed_note(label: str, packed: Any) -> str:
    """A quantized model's packed weights: how many of its params, per dtype (JSON: `packed_params`)."""
    per_dtype = ", ".join(f"{dtype} {n:,}" for dtype, n in packed)
    return (f"{label}: {sum(n for _, n in packed):,} params are packed quantized weights and biases "
            f"({per_dtype}), counted by elements, not trainable.")


def _param_items(pc: Any, by: str, depth: int | None) -> Sequence[tuple[str, int]]:
    if by == "stage":
        return list(pc.by_stage)
    if by == "type":
        return list(pc.by_type)
    return [(name or "(model)", n) for name, n in pc.by_module
            if n and (depth is None or module_depth(name) <= depth)]


def _params_table(label: str, by: str, rows: list[dict[str, Any]], shapes: bool) -> Table:
    shape_cols = [Column("in_shape", "Input", _shape_or_dash), Column("out_shape", "Output", _shape_or_dash)]
    return Table(f"{label}: parameters by {by}", [
        Column("name", by.capitalize(), _indent if by == "layer" else str, "left"),
        *(shape_cols if by == "layer" and shapes else []),
        Column("params", "Params", integer), Column("share", "Share", percent),
    ], rows)


# ----------------------------------------------------------------------------- flops


def flops_report(results: list[Any], convention: str = "macc", by: str | None = None,
                 depth: int | None = None) -> Report:
    """results: (FlopCount, params or None, params per module path or None), or FlopCounts alone; by: None,
    "op", "type", "stage" or "layer" (one breakdown table per model), depth: deepest layer shown."""
    results = [r if isinstance(r, tuple) else (r, None, None) for r in results]
    if results and results[0][0].mode == "train":
        return _train_report(results, convention, by, depth)
    scope = results[0][0].scope if results else "conv"
    # One input for every row: say it once in the title, so that narrow terminals keep the numbers.
    inputs = {fc.input_shape for fc, _, _ in results}
    common_input = f" at {shape(next(iter(inputs)))}" if len(inputs) == 1 else ""
    columns = [Column("model", "Model", justify="left")]
    columns += [] if common_input else [Column("input_shape", "Input", shape)]
    columns += [Column("params", "Params", si), Column("macs", "MACs", si), Column("acts", "Acts", si)]
    if scope == "all":
        columns.append(Column("other_ops", "Other ops", si))
    columns.append(Column("flops", f"FLOPs [{convention}]", si))
    main = Table(f"FLOPs per forward pass{common_input} — convention: {CONVENTION_TEXT[convention]}; "
                 f"scope: {SCOPE_TEXT[scope]}", columns, [])
    report = _per_model(main, results, convention, by, depth,
                        lambda fc, params: _flops_row(fc, params, convention), _flops_breakdown, _flops_table,
                        lambda fc, row: {k: v for k, v in row.items() if k != "uncounted_ops"} | _uncounted(fc))
    main.notes.append("Acts: output elements of every conv, linear and windowed pooling layer (pycls's activations).")
    return report


def _per_model(main: Table, results: list[tuple], convention: str, by: str | None, depth: int | None,
               row_of: Any, breakdown: Any, table_of: Any, csv_of: Any) -> Report:
    """The report of one FLOPs table row per model (`row_of(fc, params)`) and, with `by`, one breakdown table per
    model (`breakdown` rows, `table_of` table); without `by` one CSV row per model (`csv_of(fc, row)`)."""
    tables, json_rows, csv_rows = [main], [], []
    for fc, params, module_params in results:
        row = row_of(fc, params)
        main.rows.append({**row, "input_shape": fc.input_shape})
        main.notes += _flops_notes(fc)
        if by:
            rows = breakdown(fc, by, depth, convention, row["flops"], module_params)
            row[f"by_{by}"] = rows
            csv_rows += [{"model": fc.model, "by": by, "convention": convention, "scope": fc.scope, **r} for r in rows]
            tables.append(table_of(fc, by, convention, rows))
        else:
            csv_rows.append(csv_of(fc, row))
        json_rows.append(row)
    return Report(tables, json_rows, csv_rows)


def _uncounted(fc: Any) -> dict[str, str]:
    return {"uncounted_ops": " ".join(f"{op}:{n}" for op, n in fc.uncounted)}


def _flops_row(fc: Any, params: int | None, convention: str) -> dict[str, Any]:
    """Raw numbers of one FlopCount (the JSON object of `cnnprof flops`)."""
    return {"model": fc.model, "flops": fc.flops(convention), "macs": fc.macs, "acts": fc.acts,
            "other_ops": fc.other_ops, "convention": convention, "scope": fc.scope, "backend": fc.backend,
            "input_shape": list(fc.input_shape),
            "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in fc.inputs],
            "method": fc.method, "params": params, "uncounted_ops": dict(fc.uncounted)}


def _flops_notes(fc: Any) -> list[str]:
    """What a reader must know about how one model was counted: a real CPU pass, its inputs, uncounted ops."""
    notes = []
    if fc.method == "cpu" and fc.backend == "torch":
        what = "training step" if fc.mode == "train" else "forward pass"
        notes.append(f"{fc.model}: counted by one real {what} on the CPU (it cannot run on the meta "
                     f"device: data-dependent ops or values read); inputs: floats uniform in [0, 1), "
                     f"ints and bools zero, so data-dependent parts count for those values.")
    if len(fc.inputs) > 1 or any(i.name or i.dtype != "float32" for i in fc.inputs):
        notes.append(f"{fc.model}: inputs {', '.join(str(i) for i in fc.inputs)}")
    if fc.uncounted:
        notes.append(f"{fc.model}: ops that ran but have no formula (not counted): "
                     + ", ".join(f"{op} ×{n}" for op, n in fc.uncounted))
    return notes


def _shares(fc: Any, by: str, depth: int | None) -> list[tuple[str, Any]]:
    """(key, Share) of every row of a breakdown: a module path for layers, else the row's name."""
    if by == "layer":
        return [(name, s) for name, s in fc.by_module(depth)]
    return [(s.name, s) for s in {"op": fc.by_op, "stage": fc.by_stage, "type": fc.by_type}[by]()]


def _flops_breakdown(fc: Any, by: str, depth: int | None, convention: str, total: int,
                     module_params: dict[str, int] | None) -> list[dict[str, Any]]:
    shares = _shares(fc, by, depth)
    shapes = {name: (i, o) for name, i, o in getattr(fc, "module_shapes", ())}
    rows = []
    for name, s in shares:
        flops = s.flops(convention)
        row = {"name": s.name, "macs": s.macs, "other_ops": s.ops, "flops": flops, "share": _share(flops, total)}
        if by == "op":
            row["calls"] = s.calls
        if by == "layer" and module_params is not None:
            row["params"] = module_params.get(name, 0)
        if by == "layer":
            _shape_cells(row, shapes, name)
        rows.append(row)
    return rows


def _lead_columns(by: str) -> list[Column]:
    """The columns before the counts: the group's name; a layer's shapes and params; an op's calls."""
    cols = [Column("name", {"layer": "Module", "op": "Op"}.get(by, by.capitalize()),
                   _indent if by == "layer" else str, "left")]
    if by == "layer":
        cols += [Column("in_shape", "Input", _shape_or_dash), Column("out_shape", "Output", _shape_or_dash),
                 Column("params", "Params", si)]
    if by == "op":
        cols.append(Column("calls", "Calls", integer))
    return cols


def _flops_table(fc: Any, by: str, convention: str, rows: list[dict[str, Any]]) -> Table:
    cols = _lead_columns(by)
    cols += [Column("macs", "MACs", si)]
    cols += [Column("other_ops", "Other ops", si)] if fc.scope == "all" else []
    cols += [Column("flops", f"FLOPs [{convention}]", si), Column("share", "Share", percent)]
    return Table(f"{fc.model}: FLOPs by {by} ({shape(fc.input_shape)})", cols, rows)


# ----------------------------------------------------------------------------- flops of a training step

# (phase of FlopCount.part, JSON key, column header) of each part of a training step
_PHASES = (("forward", "forward_flops", "Forward"), ("grad_input", "grad_input_flops", "Bwd input"),
           ("grad_weight", "grad_weight_flops", "Bwd weight"))
TRAIN_STEP = ("Training step: the forward pass in train() mode, then autograd's backward for a gradient of ones on "
              "the outputs (the loss is not counted).")
TRAIN_NOTE = (TRAIN_STEP + " Bwd input: gradients passed on to earlier layers (a conv's "
              "transposed conv, as many MACs as its forward; none for the first layer); Bwd weight: parameter "
              "gradients (a conv's forward MACs again; none for frozen parameters).")


def phase_flops(fc: Any, convention: str) -> dict[str, Any]:
    """The JSON fields of a training step: FLOPs of each part, backward, trainable and frozen parameters."""
    parts = {key: fc.part(phase).flops(convention) for phase, key, _ in _PHASES}
    return {**parts, "backward_flops": parts["grad_input_flops"] + parts["grad_weight_flops"],
            "forward_macs": fc.forward.macs, "backward_macs": fc.backward.macs,
            "trainable_params": fc.trainable, "frozen": list(fc.frozen)}


def _phase_columns(convention: str) -> list[Column]:
    return [Column(key, f"{header} [{convention}]", si, short=header) for _, key, header in _PHASES]


def _train_report(results: list[tuple], convention: str, by: str | None, depth: int | None) -> Report:
    """flops_report of training steps: forward, backward to inputs, backward to weights and their total."""
    scope = results[0][0].scope
    inputs = {fc.input_shape for fc, _, _ in results}
    common_input = f" at {shape(next(iter(inputs)))}" if len(inputs) == 1 else ""
    columns = [Column("model", "Model", justify="left")]
    columns += [] if common_input else [Column("input_shape", "Input", shape)]
    columns += [Column("params", "Params", si), Column("trainable_params", "Trainable", si),
                *_phase_columns(convention), Column("flops", f"Total [{convention}]", si, short="Total")]
    main = Table(f"FLOPs per training step (forward + backward){common_input} — convention: "
                 f"{CONVENTION_TEXT[convention]}; scope: {SCOPE_TEXT[scope]}", columns, [])
    def row_of(fc: Any, params: int | None) -> dict[str, Any]:
        base = _flops_row(fc, params, convention)
        return {"model": fc.model, "mode": "train", **{k: v for k, v in base.items() if k != "model"},
                **phase_flops(fc, convention)}

    report = _per_model(main, results, convention, by, depth, row_of, _train_breakdown, _train_table,
                        lambda fc, row: {k: v for k, v in row.items() if k not in ("uncounted_ops", "frozen")}
                        | {"frozen": " ".join(fc.frozen)} | _uncounted(fc))
    main.notes.append(TRAIN_NOTE)
    return report


def _train_breakdown(fc: Any, by: str, depth: int | None, convention: str, total: int,
                     module_params: dict[str, int] | None) -> list[dict[str, Any]]:
    """flops_breakdown's rows, each with the FLOPs of the three parts of the step."""
    rows = _flops_breakdown(fc, by, depth, convention, total, module_params)
    keys = [key for key, _ in _shares(fc, by, depth)]
    for phase, field, _ in _PHASES:
        part = {key: s.flops(convention) for key, s in _shares(fc.part(phase), by, depth)}
        for row, key in zip(rows, keys):
            row[field] = part.get(key, 0)
    return rows


def _train_table(fc: Any, by: str, convention: str, rows: list[dict[str, Any]]) -> Table:
    cols = _lead_columns(by)
    cols += [*_phase_columns(convention), Column("flops", f"Total [{convention}]", si, short="Total"),
             Column("share", "Share", percent)]
    return Table(f"{fc.model}: training FLOPs by {by} ({shape(fc.input_shape)})", cols, rows)
