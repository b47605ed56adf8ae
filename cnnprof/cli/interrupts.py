"""Ctrl-C and SIGTERM during a run: stop, keep what finished, exit 130.

Our handler raises `Interrupted`, not KeyboardInterrupt, so a user's model that raises KeyboardInterrupt
itself is told apart from a real Ctrl-C. While models are timed in rounds ("soft" mode) the signal is
only recorded and the timing loop polls it between calls, so the completed rounds are kept.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Interrupted(BaseException):
    """Raised by our SIGINT/SIGTERM handler. Not a KeyboardInterrupt, so a user model that raises
    KeyboardInterrupt itself is told apart from a real Ctrl-C: the first fails its row, the second stops the run."""


INTERRUPTED = 130  # exit code after Ctrl-C or SIGTERM, as shells report a SIGINT death


class _Signals:
    """Whether Ctrl-C/SIGTERM arrived; in soft mode (interleaved timing) it is only recorded, and the
    timing loop polls it between calls so that the completed rounds are kept."""

    requested = False
    soft = False


SIGNALS = _Signals()


@contextmanager
def soft_interrupts():
    """While timing in rounds: record a signal instead of raising, see `interrupt_requested`."""
    SIGNALS.soft = True
    try:
        yield
    finally:
        SIGNALS.soft = False


def interrupt_requested() -> bool:
    return SIGNALS.requested


@contextmanager
def interruptible():
    """Turn SIGINT and SIGTERM into `Interrupted` while the body runs (main thread only)."""
    SIGNALS.requested = False
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        SIGNALS.requested = True
        if not SIGNALS.soft:
            raise Interrupted(signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextmanager
def sigterm_as_ctrl_c():
    """While the body runs, SIGTERM raises KeyboardInterrupt exactly as Ctrl-C does (main thread only). Every
    command body runs in it (cli.common.guard): a signal outside the windows where a command installs its own
    handler (`interruptible`, a calibration, a search's batch) still ends in one line and exit 130, never a silent
    death by SIGTERM's default action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def user_failure(label: str, exc: BaseException) -> str:
    """One-line message for a model that exits or interrupts instead of returning."""
    if isinstance(exc, SystemExit):
        return f"{label}: the model called sys.exit({exc.code!r}); its row is skipped"
    return f"{label}: the model raised {type(exc).__name__}; its row is skipped"
