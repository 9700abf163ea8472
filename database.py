"""Engine settings per backend (pool sizing, pre-ping, SQLite's pragmas and writer queue),
and the one unit of work every service uses."""

from __future__ import annotations

import fcntl
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from flask import current_app
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from config import ConfigError
from extensions import db

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


def insert_or_add(dialect_name: str, table: Any, counters: tuple[str, ...]) -> Any:
    """An INSERT into `table` that, for a row its primary key already holds, adds the values
    of `counters` to that row's instead (ON CONFLICT DO UPDATE, which SQLite and PostgreSQL
    both speak): concurrent writers of one counter row add up rather than race."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = (postgresql if dialect_name == "postgresql" else sqlite).insert(table)
    return insert.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={name: table.c[name] + insert.excluded[name] for name in counters},
    )
