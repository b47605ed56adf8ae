"""Shared pieces of the cnnprof CLI: the Typer app, option types, model iteration and error handling.

torch is imported inside the commands that need it, so `cnnprof --help` and `cnnprof list` start fast.
Exit codes: 0 success; 1 a measurement failed (e.g. CUDA out of memory) or an internal error;
2 bad input (unknown model, invalid config or option), reported in one line on stderr.
"""
from __future__ import annotations

import os
import sys
from contextlib import redirect_stdout
from enum import Enum
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from typing_extensions import Annotated

from cnnprof.cli.interrupts import (  # noqa: F401 - re-exported for the commands
    INTERRUPTED, SIGNALS, Interrupted, interrupt_requested, interruptible, sigterm_as_ctrl_c, soft_interrupts,
    user_failure)
from cnnprof.errors import CnnprofError, first_line
from cnnprof.inputs import MAX_INPUT_ELEMENTS, InputSpec, check_explicit, input_specs, parse_inputs  # noqa: F401 - re-exported to commands

class _App(typer.Typer):
    """The Typer app, but stdout that cannot be written while Click prints (`--help`, `--version` or a usage
    message into /dev/full) is one line on stderr and exit 1, and a closed pipe a quiet exit 0, never a
    traceback (the commands' own output goes through guard)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from cnnprof.report.render import quiet_stdout

        try:
            return super().__call__(*args, **kwargs)
        except BrokenPipeError:
            quiet_stdout()
            sys.exit(0)
        except OSError as exc:
            if os.environ.get("CNNPROF_DEBUG"):
                raise
            quiet_stdout()
            print_error(f"cannot write the output: {exc.strerror or exc}")
            sys.exit(1)


app = _App(
    name="cnnprof",
    help="Profile CNN complexity: parameters, FLOPs (under an explicit convention) and measured runtime.\n\n"
         "MODEL is a zoo name or alias (see `cnnprof list`), a path to a YAML config, or "
         "package.module:callable / path/to/file.py:callable returning a torch.nn.Module.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)  # ":smile:" in a name stays as written


def _help_type(param: Any, ctx: Any) -> str | None:
    """Help shows words, not Python types: an argument shows its metavar alone (not `MODEL <list[str]>`);
    an option without a metavar shows its name (`--threads THREADS`, not `<int range>`) unless it is a choice."""
    if isinstance(param, typer.core.TyperArgument):
        return None
    if param.metavar is not None:
        return param.metavar
    if param.type_descriptor.is_choice:
        return param.display_type(ctx)
    return param.name.upper().rstrip("_")


def _usage_name(self: Any) -> str:
    """An argument in the usage line: its metavar as written (`MODEL MODEL [MODEL]...`), else NAME... or
    [NAME]... (typer writes a required one as `{NAME}`, which reads as a set of choices)."""
    if self.metavar is not None and ("..." in self.metavar or " " in self.metavar):
        return self.metavar
    raw = self.metavar or self.display_name_raw
    name = raw if self.required else f"[{raw}]"
    return name + ("..." if self.nargs != 1 else "")


typer.core.TyperArgument.display_type_rich = _help_type
if hasattr(typer.core.TyperArgument, "_usage_display_name"):
    typer.core.TyperArgument._usage_display_name = _usage_name
typer.core.TyperOption.display_type_rich = _help_type


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("cnnprof")
        except PackageNotFoundError:  # running from a source tree that is not installed
            text = "unknown"
        typer.echo(f"cnnprof {text}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                help="Print cnnprof's version and exit.")] = False) -> None:
    pass


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


class Convention(str, Enum):
    macc = "macc"
    nvidia = "nvidia"


class Scope(str, Enum):
    conv = "conv"
    all = "all"


class Backend(str, Enum):
    torch = "torch"
    fvcore = "fvcore"


class ParamsBy(str, Enum):
    stage = "stage"
    type = "type"
    layer = "layer"


class FlopsBy(str, Enum):
    layer = "layer"
    op = "op"
    stage = "stage"
    type = "type"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


ModelsArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="MODEL", show_default=False,
    help="Models to analyse; none means the whole zoo. MODEL@key=value,...,label=NAME gives one model its own "
         "settings (they override --set) and row label.")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format; json/csv/markdown write only data to stdout.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE",
    help="Override a config value (repeatable): a param such as width_mult=0.75 or stride_in_1x1=true, or a "
         "dotted path such as stages.2.depth=9. For module:callable, passed to the callable as keywords.",
    show_default=False)]
ConventionOpt = Annotated[Convention, typer.Option(
    help="FLOP convention: macc counts 1 multiply-accumulate as 1 FLOP (most papers); nvidia counts it as 2.")]
ScopeOpt = Annotated[Scope, typer.Option(
    help="conv: convolution and linear layers only (papers, torchvision); all: also norm, activations, "
         "pooling and element-wise ops, each with a documented formula.")]
ResolutionOpt = Annotated[Optional[int], typer.Option(
    min=1, help="Input height and width (default: the config's resolution, usually 224).", show_default=False)]
InputShapeOpt = Annotated[Optional[list[str]], typer.Option(
    "--input-shape", metavar="SHAPE[:DTYPE]", show_default=False,
    help="Exact shape of a positional input of forward (any rank), e.g. 1,64,56,56 for a single block; repeat it "
         "for each positional input; a dtype after a colon, e.g. 1,128:int64 for token ids. Overrides "
         "--batch-size, --resolution and the model's declared input.")]
InputOpt = Annotated[Optional[list[str]], typer.Option(
    "--input", metavar="NAME=SHAPE[:DTYPE]", show_default=False,
    help="A keyword input of forward (repeatable), e.g. --input x=1,3,224,224 --input mask=1,224,224:bool; "
         "after any --input-shape positional inputs.")]

DepthOpt = Annotated[Optional[int], typer.Option(
    min=0, show_default=False, help="With --by layer: deepest module level shown (default 2; 0 is the model).")]
DEFAULT_DEPTH = 2


def layer_depth(depth: int | None, by_layer: bool) -> int:
    """--depth means the same in params and flops: only with --by layer, default DEFAULT_DEPTH."""
    if depth is not None and not by_layer:
        raise CnnprofError("--depth applies to --by layer only; add --by layer or drop --depth")
    return DEFAULT_DEPTH if depth is None else depth


BatchSizesOpt = Annotated[Optional[str], typer.Option(
    metavar="B[,B...]", show_default=False,
    help="Batch size N of the input, or a comma-separated sweep such as 1,8,32 (one row per size; default 1).")]
OutputOpt = Annotated[Optional[str], typer.Option(
    "--output", "-o", metavar="FILE", show_default=False,
    help="Also write the rows to FILE (.json, .jsonl or .csv) as each one is produced, so an interrupted run "
         "keeps its finished rows.")]


def explicit_inputs(shapes: list[str] | None, named: list[str] | None, resolution: int | None = None,
                    batch_size: Any = None) -> tuple[InputSpec, ...] | None:
    """--input-shape / --input as InputSpecs (None when neither is given). They are used as given: --resolution
    with them is an error on every command (cnnprof.inputs.check_explicit), and so is --batch-size where a
    command takes the batch from them (`batch_size`: the value given, None when not given)."""
    specs = parse_inputs(shapes, named)
    check_explicit(specs, resolution)
    if specs is not None and batch_size is not None:
        raise CnnprofError("--batch-size has no effect with --input-shape / --input (their first dimension is "
                           "the batch)")
    return specs


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    from cnnprof.models.config import parse_override

    return dict(parse_override(item) for item in items or [])


def model_specs(models: list[str] | None) -> list[str]:
    if models:
        return models
    from cnnprof.models.zoo import zoo_names

    return zoo_names()


MAX_ERROR_CHARS = 400


def print_error(message: Any, prefix: str = "error") -> None:
    """One error line on stderr: control characters (line breaks included) escaped, length capped, so that
    whatever a user's value or model put in the message it stays one readable line."""
    from cnnprof.cli.options import as_options
    from cnnprof.report.render import printable

    text = printable(as_options(str(message)))
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS - 1] + "…"
    err.print(f"{prefix}: {text}", markup=False)


def print_note(text: str) -> None:
    """One line of information on stderr ("wrote FILE"), escaped as errors are (FILE is the user's argument)."""
    from cnnprof.report.render import printable

    err.print(printable(text), markup=False)


def for_each_model(specs: list[Any], work: Callable[[Any], Any], what: str,
                   name: Callable[[Any], str] = str, on_result: Callable[[Any], None] | None = None
                   ) -> tuple[list[Any], int]:
    """Run `work` per model (or job); a failing one is reported on stderr and the others still run.
    What a model prints goes to stderr (stdout carries only the report); a model that calls sys.exit or
    raises KeyboardInterrupt fails its own row. Ctrl-C or SIGTERM stops the loop: the results so far are
    returned with exit code 130. `on_result` sees each result as it is produced (e.g. --output).
    Returns (results, exit code so far)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cnnprof.report.render import OutputError, printable

    results, code = [], 0
    show = len(specs) > 1 and err.is_terminal
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True, disable=not show) as progress, interruptible():
        task = progress.add_task(what, total=len(specs))
        for done, spec in enumerate(specs):
            progress.update(task, description=printable(f"{what} {name(spec)}"))
            try:
                with redirect_stdout(sys.stderr):
                    result = work(spec)
                results.append(result)
                if on_result is not None:
                    on_result(result)
                if SIGNALS.requested:  # arrived during soft-mode timing: the partial result is kept
                    raise Interrupted()
            except Interrupted:
                progress.stop()
                err.print(f"interrupted: {len(results)} of {len(specs)} jobs done; showing those", markup=False)
                return results, INTERRUPTED
            except CnnprofError as exc:
                print_error(exc)
                code = max(code, 2)
            except OutputError:  # --output cannot be written (a full disk): the run stops, see guard
                raise
            except (SystemExit, KeyboardInterrupt) as exc:  # the user's model, not us: see Interrupted
                print_error(user_failure(name(spec), exc))
                code = max(code, 2)
            except Exception as exc:  # noqa: BLE001 - one broken model must not lose the others
                if os.environ.get("CNNPROF_DEBUG"):
                    raise
                print_error(f"{name(spec)}: internal error: {type(exc).__name__}: {first_line(exc)} "
                            f"(set CNNPROF_DEBUG=1 for the traceback)")
                code = max(code, 1)
            progress.advance(task)
    return results, code


def guard(fn: Callable[[], int]) -> None:
    """Run a command body: bad input -> one line on stderr and exit 2; a closed pipe on stdout (`| head`)
    -> quiet exit 0; another write error -> one line and exit 1; Ctrl-C outside a model loop -> 130."""
    from cnnprof.report.render import OutputError, quiet_stdout, safe_encoding

    safe_encoding()
    try:
        with sigterm_as_ctrl_c():
            code = fn()
    except CnnprofError as exc:
        print_error(exc)
        raise typer.Exit(2)
    except BrokenPipeError:
        quiet_stdout()
        raise typer.Exit(0)
    except OutputError as exc:
        quiet_stdout()
        print_error(exc)
        raise typer.Exit(1)
    except (KeyboardInterrupt, Interrupted):
        err.print("interrupted", markup=False)
        raise typer.Exit(INTERRUPTED)
    raise typer.Exit(code)


def single_batch_size(text: str, command: str) -> int:
    """Commands that show one configuration take one batch size and say where sweeps are."""
    sizes = parse_batch_sizes(text)
    if len(sizes) > 1:
        raise CnnprofError(f"--batch-size {text!r}: {command} compares models at one batch size; sweep batch sizes "
                           f"with `cnnprof bench` or `cnnprof flops`")
    return sizes[0]


def model_args(models: list[str] | None, set_: list[str] | None):
    """Parse MODEL[@key=value,...,label=NAME] arguments with the run-wide --set (the whole zoo if none)."""
    from cnnprof.cli.models_arg import parse_model_arg

    return [parse_model_arg(m, set_) for m in model_specs(models)]


def add_overrides(report, by_label: dict[str, dict[str, Any]]):
    """Put each row's effective overrides (`overrides`, by row label) next to its model name in JSON and CSV."""
    from cnnprof.report.compare import with_overrides

    return with_overrides(report, by_label)


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise CnnprofError(f"--batch-size {text!r}: expected a comma-separated list of integers like 1,8,32") from None
    if not sizes or any(b < 1 for b in sizes):
        raise CnnprofError(f"--batch-size {text!r}: batch sizes must be positive integers")
    if any(b > MAX_INPUT_ELEMENTS for b in sizes):  # the whole input is capped at that many elements
        raise CnnprofError(f"--batch-size {text!r}: at most 2^40 ({MAX_INPUT_ELEMENTS:,}), the cap on an "
                           f"input's elements")
    return sizes




def open_output(path: str | None):
    """RowWriter for --output, or None."""
    if path is None:
        return None
    from cnnprof.report.render import RowWriter

    return RowWriter(path)


def emit_report(fmt: str, report, code: int, what: str = "rows") -> None:
    """Print a report; after an interruption the first table says that only finished rows are shown.
    Table and Markdown output stay empty when nothing succeeded; JSON prints [] and CSV nothing."""
    from cnnprof.report.render import emit

    tables, json_rows, csv_rows = report
    if code == INTERRUPTED and tables:
        tables[0].notes.append(f"interrupted: only the {what} finished before Ctrl-C/SIGTERM are shown.")
    if json_rows or fmt == "json":
        emit(fmt, tables, json_rows, csv_rows)
