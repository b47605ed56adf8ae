"""The processes that count a search's trials: they die with the search that started them.

A killed parent (SIGKILL, SIGTERM, an OOM kill) must not leave its workers running (each holds torch, some
hundred MB): on Linux every worker asks the kernel for SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG),
and a watchdog thread in each worker exits when its parent is no longer the one that started it (other
systems, or a parent that died before the worker had asked). An interrupted parent terminates its workers
instead of waiting for their trials.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

WATCHDOG_S = 0.5  # how often a worker checks that its parent still lives
PR_SET_PDEATHSIG = 1


def make_pool(workers: int) -> Any:
    """A pool of `workers` processes (forked where possible) that die with this process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import cnnprof.counting.flops  # noqa: F401 - imported before forking, so no worker imports torch again
    import cnnprof.counting.params  # noqa: F401
    import cnnprof.models.builder  # noqa: F401

    # fork: children inherit the imported torch and cnnprof (no re-import per worker).
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=worker_init,
                               initargs=(os.getpid(),))
    pool.submit(os.getpid).result()  # fork every worker now, before the search starts its heartbeat thread
    return pool


def worker_init(parent: int) -> None:
    """In each worker: signals are the parent's to handle, die with the parent, one torch thread."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C (sent to the whole process group) is the parent's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, inherited through fork
    die_with_parent(parent)
    torch.set_num_threads(1)


def die_with_parent(parent: int) -> None:
    """Be killed when process `parent` dies: the kernel's death signal (Linux) and a watchdog thread."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the watchdog alone
        pass
    if os.getppid() != parent:  # the parent died before the death signal was set
        os._exit(1)
    threading.Thread(target=_watchdog, args=(parent,), name="cnnprof-watchdog", daemon=True).start()


def _watchdog(parent: int) -> None:
    import time

    while os.getppid() == parent:
        time.sleep(WATCHDOG_S)
    os._exit(1)


def stop_pool(pool: Any, terminate: bool) -> None:
    """Shut the pool down; with `terminate` (an interrupted run) kill the workers now rather than wait for their
    trials."""
    if terminate:
        processes = getattr(pool, "_processes", None) or {}  # ProcessPoolExecutor's own; 3.14 has terminate_workers
        for process in list(processes.values()):
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while the body runs and act on them right after it, as the handlers in place
    would have: a trial is told to the study and streamed to the output whole, or not at all. Main thread only
    (where Python runs signal handlers); a signal mask would not do, the kernel hands it to another thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: arrived.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python
        if arrived:
            _deliver(arrived[0], old[arrived[0]])


def _deliver(signum: int, handler: Any) -> None:
    """What the signal would have done: the handler's effect, or the default action (SIGTERM: die)."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)
