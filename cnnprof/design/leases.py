"""Which process runs which trial, so that a trial left RUNNING by a dead process is found and run again.

Each search process keeps one record in the study's user attributes (`cnnprof_worker:HOST:PID:START`): its
host, pid, process start time, the trial numbers it is running, and a heartbeat time rewritten every `BEAT_S`
seconds. A RUNNING trial is stale when its owner is gone: on this host, a pid that no longer runs (or was
reused); on another host, a heartbeat older than `GRACE_S` (machines' clocks must agree to within that, as NTP
keeps them); with no owner at all (a process killed between asking and recording, an older cnnprof), a
trial started more than `GRACE_S` ago. A stale trial is failed (only one process wins that, the storage
refuses to finish a trial twice) and its sample is queued again, so the study loses nothing.
One record write per batch of trials, not per trial: the storage is a database round trip per write.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Iterable

from cnnprof.design.study import STALE, accepted

PREFIX = "cnnprof_worker:"
BEAT_S = 10.0  # how often a running search rewrites its heartbeat
GRACE_S = 60.0  # a heartbeat (or an unowned trial's start) older than this is a dead process's


def host_id() -> str:
    """This machine: host name and boot id (Linux), so that pids are compared only within one boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{socket.gethostname()}/{f.read().strip()[:8]}"
    except OSError:
        return socket.gethostname()


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux), telling a reused pid apart; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int, start: str | None) -> bool:
    """Whether process `pid` still runs on this host (and is the one that started at `start`, when known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    except (OverflowError, ValueError):
        return False
    now = process_start(pid)
    return start is None or now is None or now == start


class Lease:
    """This process's record in the study: the trials it runs, kept fresh by a heartbeat thread."""

    def __init__(self, study: Any):
        self.study = study
        self.pid = os.getpid()
        self.host = host_id()
        self.start = process_start(self.pid)
        self.key = f"{PREFIX}{self.host}:{self.pid}:{self.start or int(time.time())}"
        self.trials: list[int] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="cnnprof-heartbeat", daemon=True)

    def __enter__(self) -> "Lease":
        self.write()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=BEAT_S)
        self.claim([])

    def claim(self, numbers: Iterable[int]) -> None:
        """Record the trials this process runs now (one storage write)."""
        self.trials = list(numbers)
        self.write()

    def write(self) -> None:
        with self._lock:
            self.study.set_user_attr(self.key, {"host": self.host, "pid": self.pid, "start": self.start,
                                                "beat": time.time(), "trials": self.trials})

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_S):
            try:
                self.write()
            except Exception:  # noqa: BLE001 - a missed heartbeat only makes other hosts wait; never crash
                pass


def _owner_alive(record: Any, host: str, now: float) -> bool:
    if not isinstance(record, dict):
        return False
    if record.get("host") == host and isinstance(record.get("pid"), int):
        return pid_alive(record["pid"], record.get("start") if isinstance(record.get("start"), str) else None)
    beat = record.get("beat")
    return isinstance(beat, (int, float)) and now - beat < GRACE_S


def stale_trials(study: Any, now: float | None = None) -> list[Any]:
    """RUNNING trials whose process is gone (see the module's docstring)."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    now = time.time() if now is None else now
    host = host_id()
    owners: dict[int, bool] = {}
    for key, record in study.user_attrs.items():
        if key.startswith(PREFIX) and isinstance(record, dict) and isinstance(record.get("trials"), list):
            alive = _owner_alive(record, host, now)
            for number in record["trials"]:
                owners[number] = owners.get(number, False) or alive
    stale = []
    for t in running:
        if t.number in owners:
            if not owners[t.number]:
                stale.append(t)
        elif t.datetime_start is None or now - t.datetime_start.timestamp() > GRACE_S:
            stale.append(t)
    return stale


def rerun_stale(study: Any, now: float | None = None) -> int:
    """Fail the stale RUNNING trials and queue their samples again; how many this process failed."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    failed = 0
    for t in stale_trials(study, now):
        try:  # marked first: its counts may be stored already (killed before telling the state), see `counts`
            study._storage.set_trial_user_attr(t._trial_id, STALE, True)
            won = study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:  # another process failed it first (or it just finished)
            continue
        if won:
            failed += 1
            if t.params:
                study.enqueue_trial(dict(t.params), user_attrs={"cnnprof_rerun_of": t.number})
    return failed


def budget(study: Any, known: dict[int, bool], fresh: list[Any]) -> tuple[set[int], set[int], list[Any]]:
    """(finished trials that count against the budget, running trials: numbers; queued trials, oldest first), from
    one read of the study; samples rejected by a constraint on their counts do not count. `known` (trial number ->
    counts) remembers finished trials between reads: a finished trial never changes, so each is judged once;
    `fresh` receives the finished trials not known before."""
    from optuna.trial import TrialState

    running, waiting = set(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED,
                                                    TrialState.RUNNING, TrialState.WAITING)):
        if t.state == TrialState.RUNNING:
            running.add(t.number)
        elif t.state == TrialState.WAITING:
            waiting.append(t)
        elif t.number not in known:
            known[t.number] = accepted(t)
            fresh.append(t)
    return {n for n, ok in known.items() if ok}, running, waiting
