"""SQLite's disk filling up while replies are on their way: the clients get them, the journal
(on another disk) keeps them, /readyz says the database cannot be written, and once space
is freed both turns are recorded with no one doing anything.

The database lives on a real filesystem of 2 MB (a tmpfs mounted for the test, which needs
root); the test fills it with a file while the upstream is answering.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest
from support import LiveServer, all_rows, bearer, create_client_key, poll_until, replies_in_flight_while, rows_of


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 2 MB tmpfs mounted under tmp_path; the test is skipped where mounting is not allowed."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 2 MB tmpfs here (needs root): {mounted.stderr.strip()}")
    yield mount_point
    # Lazily: the app's SQLite writer lock keeps a descriptor open until the process ends.
    subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def fill(disk: Path) -> Path:
    """Write a file on `disk` until not one more byte fits; the file, to delete later."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as stream:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    stream.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def test_replies_in_flight_when_the_disk_fills_are_recorded_once_space_is_back(
    small_disk, sqlite_template, app_factory, upstream
):
    database = small_disk / "chat_history.db"
    shutil.copy(sqlite_template, database)
    app = app_factory(f"sqlite:///{database}", REQUIRE_API_KEY=True)  # the journal: on another disk
    key = bearer(create_client_key(app, "journaled", "--daily-tokens", "100000"))
    server = LiveServer(app)
    filler = []
    try:
        plain, streamed = replies_in_flight_while(lambda: filler.append(fill(small_disk)), server, upstream, key, "sq")
        assert server.wait_idle()
    finally:
        server.stop()

    assert plain["completion"] == "echo: plain in flight"
    assert streamed == "echo: streamed in flight"
    assert len(Path(app.config["JOURNAL_PATH"]).read_bytes().splitlines()) == 2
    assert [r["status"] for r in rows_of(app)] == ["pending", "pending"]  # the database still reads
    ready = app.test_client().get("/readyz")
    assert (ready.status_code, ready.get_json()["database"]) == (503, "unwritable")

    filler[0].unlink()
    completed = [("user", "completed"), ("assistant", "completed")]
    assert poll_until(
        lambda: (
            [[(r["role"], r["status"]) for r in rows_of(app, f"sq-{kind}")] for kind in ("plain", "streamed")]
            == [completed, completed]
        )
    ), rows_of(app)
    (usage,) = all_rows(app)["api_key_usage"]
    assert usage[2:7] == (2, 22, 14, 36, 0)  # requests, prompt, completion, total, reserved: charged once
    # The replayer rewrites the journal just after its last commit: ready once it has.
    assert poll_until(lambda: app.test_client().get("/readyz").get_json()["database"] == "ok")
