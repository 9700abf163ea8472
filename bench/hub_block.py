"""What stops every greenlet of a gevent worker, and for how long.

    .venv/bin/python bench/hub_block.py [--requests 2000] [--greenlets 200]

Under gevent one OS thread runs every request; a call that blocks in C without yielding
(SQLite, a blocking flock, a resolver that does not go through gevent) stalls them all.
This patches the process as gunicorn's gevent worker does, builds the app on a migrated
SQLite file with the offline model, and measures, with a probe greenlet that asks to
wake every 1 ms and records how late it wakes (the hub's stall):

1. writes: `--greenlets` greenlets send `--requests` streamed chat requests through the
   app (two write transactions each, on the SQLite writer queue); the time each call into
   sqlite3 takes (execute, commit: C calls that never yield, so each holds the process
   that long), summed per transaction; and the probe's stalls meanwhile, which with 200
   CPU-bound greenlets are mostly their turns on the one core, not SQLite;
2. flock: another process holds the writer queue's flock for 300 ms at a time while
   greenlets write; the probe's worst stall with the cooperative wait (database.py) and
   with a plain blocking `fcntl.flock`;
3. DNS: getaddrinfo of a public name (no network here: it fails) with the probe running.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import fcntl  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import database  # noqa: E402
from app import create_app  # noqa: E402
from extensions import db  # noqa: E402


class Probe:
    """A greenlet that sleeps 1 ms at a time and records how much later than that it wakes."""

    def __init__(self) -> None:
        self.stalls_ms: list[float] = []
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            start = time.perf_counter()
            gevent.sleep(0.001)
            self.stalls_ms.append((time.perf_counter() - start) * 1000 - 1)

    def stop(self) -> dict:
        self._greenlet.kill()
        return summary(self.stalls_ms)


def summary(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p99": round(values[int(len(values) * 0.99)], 3),
        "max": round(values[-1], 3),
    }


def build_app(workdir: Path):
    url = f"sqlite:///{workdir / 'hub.db'}"
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, env=env, check=True)
    config = {"SQLALCHEMY_DATABASE_URI": url, "LLM_OFFLINE": True, "RATELIMIT_ENABLED": False}
    config.update({"APP_ENV": "development", "LOG_LEVEL": "WARNING", "DATABASE_POOL_SIZE": 8})
    return create_app(config)


def drive(app, requests: int, greenlets: int) -> None:
    client = app.test_client()

    def one(index: int) -> None:
        response = client.post("/openai-completion", json={"prompt": f"hello {index}", "stream": True})
        assert response.status_code == 200 and b"event: done" in response.data, response.data[:200]

    Pool(greenlets).map(one, range(requests))


def timed_sqlite_calls(engine) -> tuple[list[float], list[float]]:
    """Record how long each sqlite3 call takes (ms), and their sum per transaction (at commit)."""
    calls: list[float] = []
    per_transaction: list[float] = []
    running = [0.0]
    dialect = engine.dialect

    def timed(name: str, ends_transaction: bool = False) -> None:
        original = getattr(dialect, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                took = (time.perf_counter() - start) * 1000
                calls.append(took)
                running[0] += took
                if ends_transaction:
                    per_transaction.append(running[0])
                    running[0] = 0.0

        setattr(dialect, name, wrapper)

    for name in ("do_execute", "do_execute_no_params", "do_executemany"):
        timed(name)
    timed("do_commit", ends_transaction=True)
    timed("do_rollback", ends_transaction=True)
    return calls, per_transaction


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
end = time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
while time.monotonic() < end:
    fcntl.flock(fd, fcntl.LOCK_EX)
    time.sleep(0.3)
    fcntl.flock(fd, fcntl.LOCK_UN)
    time.sleep(0.05)
"""


def flock_contention(app, lock_path: str, greenlets: int) -> dict:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, lock_path, "4"], stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    probe = Probe()
    started = time.monotonic()
    done = 0
    client = app.test_client()

    def writer(index: int) -> None:
        nonlocal done
        while time.monotonic() - started < 3.5:
            client.post("/openai-completion", json={"prompt": f"contended {index}"})
            done += 1

    Pool(greenlets).map(writer, range(greenlets))
    holder.wait()
    return {"stall_ms": probe.stop(), "requests": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--greenlets", type=int, default=200)
    args = parser.parse_args()
    out: dict = {"resolver": type(gevent.get_hub().resolver).__module__}
    with tempfile.TemporaryDirectory(prefix="hub-block-") as tmp:
        app = build_app(Path(tmp))
        queue = app.extensions["sqlite_writer_queue"]
        drive(app, 50, 10)  # warm up

        with app.app_context():
            calls, per_transaction = timed_sqlite_calls(db.engine)
        probe = Probe()
        started = time.perf_counter()
        drive(app, args.requests, args.greenlets)
        elapsed = time.perf_counter() - started
        out["writes"] = {
            "requests": args.requests,
            "seconds": round(elapsed, 2),
            "sqlite_call_ms": summary(calls),
            "sqlite_ms_per_transaction": summary(per_transaction),
            "sqlite_share_of_time": round(sum(calls) / 1000 / elapsed, 3),
            "stall_ms": probe.stop(),
        }

        out["flock_cooperative"] = flock_contention(app, queue.lock_path, 20)
        cooperative = database._lock_exclusive
        database._lock_exclusive = lambda fd: fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            out["flock_blocking"] = flock_contention(app, queue.lock_path, 20)
        finally:
            database._lock_exclusive = cooperative

    probe = Probe()
    gevent.sleep(0.05)
    started = time.perf_counter()
    try:
        socket.getaddrinfo("api.openai.com", 443)
        answer = "resolved"
    except OSError as exc:
        answer = type(exc).__name__
    out["dns"] = {"answer": answer, "seconds": round(time.perf_counter() - started, 3), "stall_ms": probe.stop()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
