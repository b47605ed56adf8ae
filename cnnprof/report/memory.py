"""`cnnprof memory`: the predicted memory terms, the budget check and what each layer saves for backward."""
from __future__ import annotations

from typing import Any

from cnnprof.report.render import Column, Report, Table, integer, percent, shape

MIB = 2**20


def mib(value: int | None) -> str:
    """Bytes as MiB with one decimal: 1048576 -> '1.0'."""
    return "-" if value is None else f"{value / MIB:,.1f}"


def _fits(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _max_batch(value: int | None) -> str:
    return "-" if value is None else ("none" if value == 0 else f"{value:,}")


def memory_json(e: Any) -> dict[str, Any]:
    """One MemoryEstimate as a JSON object (raw bytes)."""
    fp = e.footprint
    row = {"model": e.model, "mode": e.mode, "optimizer": e.optimizer, "dtype": e.dtype, "device": e.device,
           "batch_size": e.batch_size, "input_shape": list(e.inputs[0].shape) if e.inputs else [],
           "parameters_bytes": fp.parameters, "buffers_bytes": fp.buffers, "gradients_bytes": fp.gradients,
           "optimizer_state_bytes": fp.optimizer_state, "inputs_bytes": fp.inputs,
           "saved_activations_bytes": fp.saved, "resident_bytes": fp.resident, "transient_bytes": fp.transient,
           "peak_bytes": fp.peak, "budget_bytes": e.budget, "budget_source": e.budget_source if e.budget else None,
           "fits": e.fits, "max_batch_size": e.max_batch}
    if e.amp:  # only with mixed precision: the default output stays as it was
        row["amp"] = e.amp
    if e.mode == "train":
        row["saved_by_layer"] = [{"layer": m or "(model)", "tensors": n, "bytes": b,
                                  "share": b / fp.saved if fp.saved else 0.0} for m, b, n in fp.saved_by_module]
    return row


def memory_report(estimates: list[Any]) -> Report:
    """The summary table of every estimate, then per training estimate the table of what each layer saves."""
    rows = [memory_json(e) for e in estimates]
    main = Table("Memory, predicted (MiB; peak = most bytes live at once over the op sequence)", [
        Column("model", "Model", justify="left"), Column("mode", "Mode", justify="left"),
        Column("batch_size", "Batch", integer), Column("parameters_bytes", "Params", mib),
        Column("gradients_bytes", "Grads", mib), Column("optimizer_state_bytes", "Optimizer", mib, short="Opt"),
        Column("inputs_bytes", "Inputs", mib), Column("saved_activations_bytes", "Saved acts", mib, short="Saved"),
        Column("peak_bytes", "Peak", mib), Column("budget_bytes", "Budget", mib), Column("fits", "Fits", _fits),
        Column("max_batch_size", "Max batch", _max_batch, short="Max B"),
    ], rows)
    main.notes += _notes(estimates)
    tables = [main] + [_saved_table(e, row) for e, row in zip(estimates, rows) if e.mode == "train"]
    csv_rows = [{k: v for k, v in row.items() if k != "saved_by_layer"} for row in rows]
    return Report(tables, rows, csv_rows)


def _notes(estimates: list[Any]) -> list[str]:
    notes = []
    if estimates:
        e = estimates[0]
        what = (f"a training step (forward, loss, backward, {e.optimizer} step)" if e.mode == "train"
                else "an inference pass (no_grad)")
        precision = e.dtype if not e.amp else (
            f"mixed precision (autocast to {e.amp}; parameters, gradients and optimizer state stay {e.dtype})")
        if e.amp and e.mode != "train":
            what = "an inference pass (inference_mode: autocast caches no cast weight)"
        notes.append(f"{precision}, {what}, simulated on the meta device for {e.device}; buffers "
                     f"{mib(e.footprint.buffers)} MiB are in the peak, not in a column.")
    for e in estimates:
        if e.budget is None:
            continue
        source = "given" if e.budget_source == "given" else f"the {e.budget_source} of the {e.device}"
        verdict = "fits" if e.fits else "does NOT fit"
        best = ("no batch fits" if e.max_batch == 0 else f"the largest batch that fits is {e.max_batch:,}"
                if e.max_batch is not None else "")
        notes.append(f"{e.model} at batch {e.batch_size}: peak {e.peak / 2**30:.2f} GiB {verdict} in "
                     f"{e.budget / 2**30:.2f} GiB ({source})" + (f"; {best}" if best else "") + ".")
    notes.append("Not modelled: allocator rounding and caching, cuDNN workspaces, the CUDA context; of the CPU "
                 "kernels' scratch memory only oneDNN convolution's copies.")
    return notes


def _saved_table(e: Any, row: dict[str, Any]) -> Table:
    title = (f"{e.model} (batch {e.batch_size}, {shape(e.inputs[0].shape) if e.inputs else ''}): activations "
             f"saved for backward by layer, {mib(e.footprint.saved)} MiB in all")
    table = Table(title, [Column("layer", "Layer", justify="left"), Column("tensors", "Tensors", integer),
                          Column("bytes", "Saved (MiB)", mib), Column("share", "Share", percent)],
                  row.get("saved_by_layer", []))
    table.notes.append("Each storage autograd saves is counted once, under the layer that saved it first; "
                       "parameters, buffers and inputs are left out (they are resident anyway).")
    if e.amp:
        table.notes.append(f"Mixed precision: the {e.amp} copies of the weights that layers save are counted here.")
    return table
