"""`make run`'s defaults under many long streams and slow clients (issue 12).

A chat reply streams for seconds to minutes. With the defaults (no WEB_CONCURRENCY,
GUNICORN_* or pool settings) one gunicorn process must hold hundreds of streams open at
once, still answer a new request while clients that sent half a request head sit on
their connections, and record every stream when it ends. How fast is measured in
bench/streams.py; this checks that it happens at all.
"""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import requests
import sqlalchemy as sa
from fake_upstream import StreamReply
from support import Served, delta_texts, sse_events, upstream_service_env

STREAMS = 200
HALF_HEADS = 50
PIECES = ["first ", "second ", "third"]
WORKER_READY = "LLM upstream: OpenAI at"


def _statuses(database_url: str) -> dict[str, list[tuple[str, str]]]:
    """(role, status) of each stored row, by user_id, oldest first."""
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT user_id, role, status FROM messages ORDER BY id")).all()
    engine.dispose()
    by_user: dict[str, list[tuple[str, str]]] = {}
    for user_id, role, status in rows:
        by_user.setdefault(user_id, []).append((role, status))
    return by_user


def test_default_settings_hold_200_streams_and_serve_past_half_sent_requests(tmp_path, upstream):
    env = upstream_service_env(tmp_path, upstream)
    # service_env's 2 processes and limits off: here, the defaults `make run` uses, the
    # rate limits included (every stream comes from one address, as from a team's front end).
    del env["WEB_CONCURRENCY"], env["RATELIMIT_ENABLED"]
    resume = threading.Event()
    # Every stream sends its first piece, then waits for `resume`: all 200 are open at once.
    upstream.enqueue(*(StreamReply(PIECES, hold_after=1, resume=resume, hold_max_seconds=120) for _ in range(STREAMS)))
    first_pieces = threading.Semaphore(0)

    def stream(index: int) -> tuple[int, str]:
        with requests.post(
            f"{served.url}/openai-completion",
            json={"prompt": f"stream {index}", "user_id": f"stream-{index}", "stream": True},
            stream=True,
            timeout=120,
        ) as response:
            lines = []
            for line in response.iter_lines(decode_unicode=True):
                lines.append(line)
                if line == "event: delta" and lines.count(line) == 1:
                    first_pieces.release()
            return response.status_code, "\n".join(lines)

    served = Served(env)
    half_heads: list[socket.socket] = []
    try:
        served.wait_for(WORKER_READY)
        with ThreadPoolExecutor(max_workers=STREAMS) as pool:
            try:
                streams = [pool.submit(stream, i) for i in range(STREAMS)]
                for opened in range(STREAMS):
                    assert first_pieces.acquire(timeout=60), f"only {opened} of {STREAMS} streams started"

                # With all 200 open, clients that send half a request head and stop.
                for _ in range(HALF_HEADS):
                    sock = socket.create_connection((env["HOST"], int(env["PORT"])), timeout=30)
                    sock.sendall(b"POST /openai-completion HTTP/1.1\r\nHost: gateway\r\nContent-Type: appl")
                    half_heads.append(sock)
                latecomer = requests.post(
                    f"{served.url}/openai-completion",
                    json={"prompt": "still there?", "user_id": "latecomer"},
                    timeout=30,
                )
                health = requests.get(f"{served.url}/healthz", timeout=30)
            finally:
                resume.set()
            finished = [future.result(timeout=120) for future in streams]
    finally:
        for sock in half_heads:
            sock.close()
        log = served.stop()

    assert latecomer.status_code == 200, latecomer.text
    assert latecomer.json()["completion"] == "echo: still there?"
    assert health.status_code == 200
    for status, body in finished:
        assert status == 200
        events = sse_events(body.splitlines())
        assert "".join(delta_texts(events)) == "".join(PIECES)
        assert events[-1][0] == "done"
    stored = _statuses(env["DATABASE_URL"])
    for index in range(STREAMS):
        assert stored[f"stream-{index}"] == [("user", "completed"), ("assistant", "completed")]
    assert stored["latecomer"] == [("user", "completed"), ("assistant", "completed")]
    outcomes = [line.get("stream_outcome") for line in served.request_lines() if line["path"] == "/openai-completion"]
    assert outcomes.count("completed") == STREAMS
    # gunicorn's gevent worker patches the standard library before the app is imported.
    assert "MonkeyPatchWarning" not in log
