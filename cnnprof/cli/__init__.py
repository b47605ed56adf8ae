"""cnnprof command line: thin Typer commands that parse, call a plain function and render.

One module per command; shared options and helpers live in `cnnprof.cli.common`. torch is imported
inside the commands that need it, so `cnnprof --help` and `cnnprof list` start fast.
Exit codes: 0 success; 1 a measurement failed (e.g. CUDA out of memory) or an internal error;
2 bad input (unknown model, invalid config or option), reported in one line on stderr.
"""
from __future__ import annotations

# Each module registers its command.
from cnnprof.cli import (  # noqa: F401
    bench, compare, device, flops, list_cmd, match, memory, params, roofline, search, sweep)
from cnnprof.cli.common import app

__all__ = ["app", "main"]

# `cnnprof --help` lists the commands in the order a user learns them, not in the order they were imported.
ORDER = ("list", "params", "flops", "compare", "bench", "device", "roofline", "memory", "sweep", "match", "search")
app.registered_commands.sort(key=lambda c: ORDER.index(c.name or c.callback.__name__)
                             if (c.name or c.callback.__name__) in ORDER else len(ORDER))


def main() -> None:
    """Console-script entry point. The working directory is searched for `package.module:callable` models, as
    `python -m` does (appended, so it never shadows an installed package)."""
    import os
    import sys

    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        app()
    finally:
        _forget_handled_ctrl_c()


def _forget_handled_ctrl_c() -> None:
    """Let a Ctrl-C/SIGTERM that `guard` handled end in its exit code (130), not in a death by SIGINT.

    CPython 3.11 marks a KeyboardInterrupt as "unhandled" whenever it leaves code run by exec() or eval() of a
    string (a dataclass or namedtuple being built while a module imports, say), even when a caller catches it;
    under `python -m cnnprof.cli` the interpreter then kills itself with SIGINT at exit, whatever code the run
    chose. exec() of a string clears that mark as it starts. A KeyboardInterrupt that truly leaves main() is
    still marked by the interpreter after this, as it should be."""
    exec("pass")  # noqa: S102 - a constant string: resets the interpreter's unhandled-Ctrl-C mark
