"""A durable local journal: what the database could not take, kept on disk until it can.

One JSON object a line, appended and fsynced before `append` returns, so an entry
survives a crash or a power cut. `drain` applies the entries in order and keeps those
not applied yet; an entry the database refuses as such (not merely "not now") is set
aside in `<journal>.rejected` for an operator, so it cannot block the ones behind it.

Several processes (gunicorn workers) share one journal: every append and drain holds an
flock on `<journal>.lock`, a file of its own, so a drain may replace the journal file
while appenders wait (they open it again once they hold the lock). Each host keeps its
own journal; nothing here knows what an entry means.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

log = logging.getLogger(__name__)


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
