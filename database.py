"""Engine settings per backend (pool sizing, pre-ping, SQLite's pragmas and writer queue),
and the one unit of work every service uses."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import Any

from flask import current_app
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from config import ConfigError
from extensions import db

log = logging.getLogger(__name__)

# How long a SQLite writer waits for the lock before "database is locked".
SQLITE_BUSY_SECONDS = 15


def engine_options(url: str, config: dict[str, Any]) -> dict[str, Any]:
    """SQLAlchemy engine options for the database behind `url`."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError("DATABASE_URL is not a valid SQLAlchemy URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        return {}  # one in-memory database per connection: no pool to size
    pool = {"pool_size": config["DATABASE_POOL_SIZE"], "max_overflow": 0, "pool_timeout": 10}
    if backend == "sqlite":
        # The driver's own wait for a locked database, on top of busy_timeout below.
        return {**pool, "connect_args": {"timeout": SQLITE_BUSY_SECONDS}}
    options: dict[str, Any] = {**pool, "pool_pre_ping": True}
    if backend == "postgresql":
        # Fail fast (then answer 503) when the server is gone, instead of hanging a thread.
        # The name lets operators (and pg_terminate_backend) find the service's sessions.
        options["connect_args"] = {"connect_timeout": 5, "application_name": "llm-gateway"}
    return options


def configure_engine(engine: Engine) -> None:
    """Per-connection set-up the backend needs; a no-op for all but SQLite."""
    if engine.dialect.name != "sqlite":
        return
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_begin_immediate)


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer nor it them. NORMAL sync is safe in WAL mode
    # (no corruption; a power cut may lose the last commits) and saves an fsync each.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Wait up to 15 s for the write lock instead of failing with "database is locked".
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# Set while this thread holds a SqliteWriterQueue turn: its transaction is a writer's.
_writing = threading.local()


def _sqlite_begin_immediate(connection) -> None:
    # A writer takes the write lock at BEGIN. A deferred transaction that reads and then
    # writes fails at once with "database is locked" if another writer committed in
    # between (busy_timeout cannot help there); IMMEDIATE makes it wait its turn instead.
    # A reader (a key lookup, a conversation page) begins deferred: in WAL mode it never
    # waits for the writer, where IMMEDIATE would queue it behind every write.
    connection.exec_driver_sql("BEGIN IMMEDIATE" if getattr(_writing, "active", False) else "BEGIN")


class SqliteWriterQueue:
    """Queue writers to one SQLite file: threads (or greenlets) on a lock, processes on an flock.

    SQLite lets one writer in at a time and makes the others poll with growing sleeps
    (1, 2, 5 ... 100 ms) until busy_timeout, which stretches tail latency under load.
    Waiting here instead wakes the next writer the moment the last one commits.
    """

    def __init__(self, database_path: str) -> None:
        self.lock_path = database_path + ".writer-lock"
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None

    def _process_fd(self) -> int:
        # One descriptor per process: an flock held through a descriptor inherited over
        # fork would be shared with the parent.
        if self._pid != os.getpid():
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the write turn for the duration of the block."""
        with self._thread_lock:
            fd = self._process_fd()
            _lock_exclusive(fd)
            _writing.active = True
            try:
                yield
            finally:
                _writing.active = False
                fcntl.flock(fd, fcntl.LOCK_UN)


def _lock_exclusive(fd: int) -> None:
    """flock(LOCK_EX) that, under gevent, makes only the calling greenlet wait.

    The thread lock above is a greenlet lock once gevent has patched threading, but flock
    is a system call: waiting in it for another process (a second worker, `flask messages
    prune`) would stop every greenlet of this one. Uncontended, the non-blocking try takes
    the lock at once; contended, the wait runs on a thread of gevent's pool, which wakes
    this greenlet the moment the other process lets go. (A greenlet killed while it waits
    leaves that thread to take the lock; only a worker's forced exit kills greenlets, and
    the lock dies with the process.)
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    threadpool = _gevent_threadpool()
    if threadpool is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    else:
        threadpool.apply(fcntl.flock, (fd, fcntl.LOCK_EX))


def _gevent_threadpool():
    """gevent's thread pool when gevent has patched this process (its gunicorn worker), else None."""
    monkey = sys.modules.get("gevent.monkey")  # never import gevent where it is not in use
    if monkey is None or not monkey.is_module_patched("threading"):
        return None
    import gevent

    return gevent.get_hub().threadpool


def writer_queue_for(engine: Engine) -> SqliteWriterQueue | None:
    """A writer queue for a file-backed SQLite engine; None for other databases."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    return SqliteWriterQueue(os.path.abspath(engine.url.database))


WRITER_QUEUE = "sqlite_writer_queue"


@contextmanager
def unit_of_work(write: bool = True) -> Iterator[Session]:
    """One short transaction on the app's session: committed when the block ends, rolled
    back if it raises, and its connection handed back to the pool either way.

    Stores take the session this yields and never commit or close it themselves. A
    `write` unit takes SQLite's writer turn (see SqliteWriterQueue); a read-only one
    (write=False) begins deferred and, in WAL mode, never waits for a writer.
    Nothing may call the LLM inside a unit of work: no connection is held across it.
    """
    queue = current_app.extensions.get(WRITER_QUEUE) if write else None
    with queue.turn() if queue else nullcontext():
        try:
            yield db.session
            if write:
                db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
        finally:
            db.session.close()


# The journal ------------------------------------------------------------------------------
#
# A durable local journal: what the database could not take, kept on disk until it can.
#
# One JSON object a line, appended and fsynced before `append` returns, so an entry
# survives a crash or a power cut. `drain` applies the entries in order and keeps those
# not applied yet; an entry the database refuses as such (not merely "not now") is set
# aside in `<journal>.rejected` for an operator, so it cannot block the ones behind it.
#
# Several processes (gunicorn workers) share one journal: every append and drain holds an
# flock on `<journal>.lock`, a file of its own, so a drain may replace the journal file
# while appenders wait (they open it again once they hold the lock). Each host keeps its
# own journal; nothing here knows what an entry means.


class EntryRejected(Exception):
    """The database is writable but refuses this entry: set it aside rather than retry it."""


class Journal:
    """The append-only journal at `path` (created on the first append)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = path + ".lock"
        self.rejected_path = path + ".rejected"
        self._thread_lock = threading.Lock()

    def pending(self) -> bool:
        """True while entries wait to be applied: one stat, cheap enough for every request."""
        try:
            return os.stat(self.path).st_size > 0
        except FileNotFoundError:
            return False

    def append(self, entry: dict[str, Any]) -> None:
        """Add `entry` as the last line, on disk (fsynced) when this returns; OSError if it
        could not be written, leaving no partial line behind."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with self._locked(blocking=True):
            _append_line(self.path, _encode(entry))

    def drain(self, apply: Callable[[dict[str, Any]], None]) -> bool:
        """Apply the entries oldest first with `apply`, stopping at the first one that
        raises (kept, with all after it, for the next drain); an entry that raises
        EntryRejected, or is not JSON, is set aside. True when the journal is empty after.

        Never waits: False at once if another thread or process is draining.
        """
        with self._locked(blocking=False) as held:
            if not held:
                return False
            lines = self._lines()
            done = 0
            for line in lines:
                if not self._apply_line(line, apply):
                    break
                done += 1
            if done or not lines:  # (a journal of blank lines is emptied too)
                self._rewrite(lines[done:])
            return done == len(lines)

    def _apply_line(self, line: bytes, apply: Callable[[dict[str, Any]], None]) -> bool:
        """Apply one line; True when it is done with (applied or set aside)."""
        try:
            apply(json.loads(line))
        except json.JSONDecodeError:
            self._set_aside(line, "not a JSON line")
        except EntryRejected as exc:
            self._set_aside(line, str(exc))
        except Exception as exc:
            # The kind only: a database error's text may carry SQL parameters (message content).
            log.warning("journal replay stopped, entries kept for the next try: %s", type(exc).__name__)
            return False
        return True

    def _set_aside(self, line: bytes, reason: str) -> None:
        log.error("journal entry set aside in %s: %s", self.rejected_path, reason)
        _append_line(self.rejected_path, line + b"\n")

    def _lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as journal:
                return [line for line in journal.read().split(b"\n") if line.strip()]
        except FileNotFoundError:
            return []

    def _rewrite(self, lines: list[bytes]) -> None:
        """Replace the journal by `lines`, atomically: a crash leaves the old or the new one."""
        temporary = self.path + ".tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, b"".join(line + b"\n" for line in lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        _fsync_directory(self.path)

    @contextmanager
    def _locked(self, *, blocking: bool) -> Iterator[bool]:
        """Hold the journal: this process's threads on a lock, processes on an flock."""
        if not self._thread_lock.acquire(blocking=blocking):
            yield False
            return
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                yield True  # closing the descriptor releases the flock
            finally:
                os.close(fd)
        finally:
            self._thread_lock.release()


def _encode(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _append_line(path: str, line: bytes) -> None:
    """Append `line` to `path` and fsync; on failure cut the file back to where it was."""
    created = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError:
            with suppress(OSError):
                os.ftruncate(fd, start)  # a torn line would spoil the next entry too
            raise
    finally:
        os.close(fd)
    if created:
        _fsync_directory(path)  # the new file's name must survive a power cut too


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
