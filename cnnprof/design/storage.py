"""Where a study is stored: a `storage` string read strictly, checked before anything is written.

Accepted: a database URL (`sqlite:///study.db`, `postgresql://user@host/db`, anything with '://'), a path
ending in .db/.sqlite/.sqlite3 (an SQLite database), or one ending in .log/.journal (an Optuna journal file).
Anything else (`notes.txt`) is refused before a byte is written, and an existing file is opened only when it is
what its name says (an SQLite database, an Optuna journal): a storage never appends to an unrelated file.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from cnnprof.errors import CnnprofError, parameter

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
JOURNAL_SUFFIXES = (".log", ".journal")
SQLITE_MAGIC = b"SQLite format 3\x00"
_PASSWORD = re.compile(r"://([^:/@]*):[^@/]*@")


def storage_url(storage: str | None) -> str | None:
    """The storage as Optuna is given it: None (memory), a URL, or a journal path; refused in one line unless
    it names a database, an SQLite file or a journal file (checked as far as can be without writing)."""
    if storage is None:
        return None
    given = parameter("storage", redacted(storage))
    if "://" in storage:
        if storage.startswith("sqlite:///"):
            _check_file(given, Path(storage[len("sqlite:///"):]), _is_sqlite, "an SQLite database")
        return _postgresql_driver(storage)
    suffix = Path(storage).suffix.lower()
    if suffix in SQLITE_SUFFIXES:
        _check_file(given, Path(storage), _is_sqlite, "an SQLite database")
        return f"sqlite:///{Path(storage).resolve()}"
    if suffix in JOURNAL_SUFFIXES:
        _check_file(given, Path(storage), _is_journal, "an Optuna journal")
        return storage
    raise CnnprofError(f"{given}: not a storage; give a database URL (sqlite:///study.db, "
                       f"postgresql://user@host/db), an SQLite file (.db, .sqlite) or a journal file (.log, .journal)")


def redacted(storage: str | None) -> str | None:
    """The storage as shown in messages and reports: a URL's password replaced by ***."""
    return None if storage is None else _PASSWORD.sub(r"://\1:***@", storage)


def open_storage(storage: str | None) -> Any:
    """What optuna.create_study takes for this storage string (see `storage_url`): None (in memory), a URL
    (Optuna's RDB storage, shareable by machines; an SQLite file in WAL mode, see `_sqlite`), or a JournalStorage
    on a journal file (appends only; shareable by processes on one machine or a shared file system)."""
    url = storage_url(storage)
    if url is not None and url.startswith("sqlite:///"):
        return _sqlite(url)
    if url is None or "://" in url:
        return url
    from optuna.storages import JournalStorage

    return JournalStorage(_journal_file(url))


def _sqlite(url: str) -> Any:
    """Optuna's RDB storage on an SQLite file in WAL mode with synchronous=NORMAL: a commit is a write to the
    log, not an fsync of the database and its rollback journal (Optuna commits once per attribute, ~10 times a
    trial). A killed process loses nothing it committed; only a crash of the machine itself can lose the last
    commits, never leaving a corrupt database (SQLite's documented guarantee for WAL + NORMAL). Several processes
    on one machine still share the file (not on a network file system, where WAL is unsupported)."""
    from optuna.storages import RDBStorage
    from sqlalchemy import event

    storage = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    event.listen(storage.engine, "connect", _sqlite_pragmas)
    storage.engine.dispose()  # the connection made while creating the tables predates the pragmas
    return storage


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # kept in the file: every process opening it uses the log
    cursor.execute("PRAGMA synchronous=NORMAL")  # per connection
    cursor.close()


def _journal_file(path: str) -> Any:
    """Optuna's journal file backend, without its fsync after every record (one per attribute): the search syncs
    once per batch (`sync`). A killed process loses nothing it wrote (the data is in the kernel's cache); a crash
    of the machine can lose at most the last batch, and the reader skips a torn last line."""
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal._file import get_lock_file

    class BatchSyncedJournal(JournalFileBackend):
        dirty = False

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            with get_lock_file(self._lock):
                with open(self._file_path, "ab") as f:
                    f.write(text.encode("utf-8"))
            self.dirty = True

        def sync(self) -> None:
            if self.dirty:
                fd = os.open(self._file_path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self.dirty = False

    return BatchSyncedJournal(path)


def close(study: Any) -> None:
    """Close this process's database connections (an SQLite file then checkpoints its log and removes its -wal and
    -shm files); the study opens them again if used after."""
    engine = getattr(getattr(getattr(study, "_storage", None), "_backend", None), "engine", None)
    if engine is not None:
        engine.dispose()


def sync(study: Any) -> None:
    """Make what this process wrote to the study durable (a journal file's fsync; a database does it itself)."""
    backend = getattr(getattr(study, "_storage", None), "_backend", None)
    if hasattr(backend, "sync"):
        backend.sync()


def _postgresql_driver(url: str) -> str:
    """postgresql://... names no driver, and SQLAlchemy before 2.1 then wants psycopg2: name psycopg (3, what
    `cnnprof[distributed]` installs) when only that one is installed."""
    from importlib.util import find_spec

    if url.startswith("postgresql://") and find_spec("psycopg2") is None and find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _check_file(given: str, path: Path, looks_right: Any, what: str) -> None:
    """An existing file must be what the storage will read it as; a missing one needs a directory to go in."""
    if path.exists():
        if not path.is_file():
            raise CnnprofError(f"{given}: {path} is not a regular file")
        if not looks_right(path):
            raise CnnprofError(f"{given}: {path} exists and is not {what}; refusing to write into it")
    elif not path.parent.is_dir():
        raise CnnprofError(f"{given}: directory {path.parent} does not exist")


def _head(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as exc:
        raise CnnprofError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _is_sqlite(path: Path) -> bool:
    return os.path.getsize(path) == 0 or _head(path, len(SQLITE_MAGIC)) == SQLITE_MAGIC


def _is_journal(path: Path) -> bool:
    """Empty, or its first line is one of Optuna's journal records (a JSON object with an op_code)."""
    first = _head(path, 1 << 16).split(b"\n", 1)[0]
    if not first:
        return os.path.getsize(path) == 0
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record
