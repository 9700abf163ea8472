"""Redis (the rate limit storage) going away: requests are still served and limited, per process.

Each test runs its own redis-server on a free port and kills it for real (SIGKILL), so the
shared Redis of TEST_REDIS_URL is never touched. While Redis is unreachable each process
counts the same limits in its own memory; one warning says so, `gateway_ratelimit_degraded`
is 1 and /readyz stays 200 with `"ratelimit_storage": "degraded"`. When Redis answers again
the counts go back to it by themselves.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from support import LiveServer, Served, free_port, upstream_service_env

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not on PATH")

COMPLETION_LIMIT = 3


class RedisProcess:
    """A redis-server of the test's own on `port`, in memory only, killable for real."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process = subprocess.Popen(
            # --dir: a crashed server's files (none are written with these options) stay in the test's folder.
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--daemonize", "no", "--dir", str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in self.process.stdout:  # the server says when it accepts connections
            if "Ready to accept connections" in line:
                break
        else:
            pytest.fail(f"redis-server on port {port} exited with {self.process.wait()}")
        # Keep reading its output so the server never blocks on a full pipe.
        self._drain = threading.Thread(target=self.process.stdout.read, daemon=True)
        self._drain.start()

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as in a crash or an OOM kill."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._drain.join(timeout=10)  # ends at the pipe's end of file
        self.process.stdout.close()

    def keys(self) -> list[str]:
        client = redis.Redis(port=self.port, decode_responses=True)
        try:
            return sorted(client.keys("*"))
        finally:
            client.close()


@pytest.fixture
def redis_servers(tmp_path):
    """Start redis-servers with `start(port)`; every one still running is killed after the test."""
    started: list[RedisProcess] = []

    def start(port: int) -> RedisProcess:
        server = RedisProcess(port, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.kill()


@pytest.fixture
def sqlite_url(sqlite_template, tmp_path) -> str:
    # The database plays no part here: SQLite only, not once per backend.
    path = tmp_path / "chat_history.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def limited_app(app_factory, sqlite_url):
    """An app counting its limits in the Redis at `port`: 3 completions a minute per client."""

    def build(port: int, **overrides):
        settings = {
            "RATELIMIT_ENABLED": True,
            "RATELIMIT_STORAGE_URI": f"redis://127.0.0.1:{port}/0",
            "RATELIMIT_COMPLETION": f"{COMPLETION_LIMIT} per minute",
            "RATELIMIT_APPLICATION": "1000 per hour",
        }
        settings.update(overrides)
        return app_factory(sqlite_url, **settings)

    return build


@pytest.fixture
def warnings_logged(caplog):
    """Every record at WARNING or above, from any logger (tracebacks included) but the
    circuit breakers', which share the Redis and say so on their own (test_routing_*)."""
    caplog.set_level(logging.WARNING)
    return lambda: [r for r in caplog.records if r.levelno >= logging.WARNING and r.name != "services.llm.breaker"]


def _degraded_gauge(client) -> float:
    return _gauge_in(client.get("/metrics").get_data(as_text=True))


def _gauge_in(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_ratelimit_degraded":
                return sample.value
    pytest.fail("gateway_ratelimit_degraded is not in /metrics")


def _complete(client, prompt: str) -> int:
    return client.post("/openai-completion", json={"prompt": prompt, "user_id": "outage"}).status_code


def _assert_degraded(client) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200  # still in the load balancer
    assert ready.get_json() == {
        "status": "ready",
        "database": "ok",
        "ratelimit_storage": "degraded",
        "upstreams": {"default": "closed"},
        "breaker_storage": "degraded",
    }
    assert _degraded_gauge(client) == 1


def test_redis_killed_while_serving_then_back_on_the_same_port(redis_servers, limited_app, warnings_logged):
    port = free_port()
    server = redis_servers(port)
    client = limited_app(port).test_client()

    assert _complete(client, "before") == 200
    shared_keys = server.keys()
    assert shared_keys  # counted in Redis while it runs
    assert client.get("/readyz").get_json()["ratelimit_storage"] == "ok"
    assert _degraded_gauge(client) == 0

    server.kill()

    # Served (the count restarts in this process's memory), and still limited per process.
    statuses = [_complete(client, f"during {i}") for i in range(COMPLETION_LIMIT + 1)]
    assert statuses == [200] * COMPLETION_LIMIT + [429]
    assert client.get("/conversations").status_code == 200
    _assert_degraded(client)
    outage = warnings_logged()
    assert [r.getMessage() for r in outage] == [
        f"Rate limit storage redis://127.0.0.1:{port} is unreachable: "
        "limits are counted per process until it answers again"
    ]

    server = redis_servers(port)  # back, empty, on the same port
    ready = client.get("/readyz")  # a probe finds it at once; requests alone do too (next test)

    assert ready.status_code == 200
    assert ready.get_json()["ratelimit_storage"] == "ok"
    assert _degraded_gauge(client) == 0
    assert _complete(client, "after") == 200
    assert set(server.keys()) == set(shared_keys)  # counted in Redis again
    assert [r.getMessage() for r in warnings_logged()[len(outage) :]] == [
        f"Rate limit storage redis://127.0.0.1:{port} answers again: limits are shared again"
    ]


def test_requests_alone_bring_the_shared_limits_back(redis_servers, limited_app, warnings_logged):
    port = free_port()
    server = redis_servers(port)
    client = limited_app(port).test_client()
    assert client.get("/conversations").status_code == 200
    server.kill()
    assert client.get("/conversations").status_code == 200
    assert _degraded_gauge(client) == 1

    server = redis_servers(port)
    # Flask-Limiter pings the storage from requests, 1, 2, 4, ... 32 seconds apart. That
    # timer is its own, with no event to await: requests go on, five a second, until one
    # lands in Redis (32 s at most; the bound below only stops a broken run).
    deadline = time.monotonic() + 120
    while not server.keys():
        assert time.monotonic() < deadline, "the shared limits never came back"
        assert client.get("/conversations").status_code == 200
        time.sleep(0.2)

    assert _degraded_gauge(client) == 0
    assert [r.getMessage().split(": ", 1)[1] for r in warnings_logged()] == [
        "limits are counted per process until it answers again",
        "limits are shared again",
    ]


def test_redis_down_at_start_up(redis_servers, limited_app, warnings_logged):
    port = free_port()  # nothing listens there yet
    client = limited_app(port).test_client()  # starts: Redis is not needed to build the app

    statuses = [_complete(client, f"no redis {i}") for i in range(COMPLETION_LIMIT + 1)]

    assert statuses == [200] * COMPLETION_LIMIT + [429]
    _assert_degraded(client)
    assert len(warnings_logged()) == 1

    server = redis_servers(port)
    assert client.get("/readyz").get_json()["ratelimit_storage"] == "ok"
    assert client.get("/conversations").status_code == 200
    assert server.keys()


def test_a_redis_that_stops_answering_costs_one_timeout_not_a_hang(limited_app, warnings_logged, caplog):
    # A host that is gone, or a frozen server: connections are accepted, nothing is answered.
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)
    password = "redis-password-" + "x" * 8
    port = silent.getsockname()[1]
    try:
        client = limited_app(
            port, RATELIMIT_STORAGE_URI=f"redis://:{password}@127.0.0.1:{port}/0", RATELIMIT_STORAGE_TIMEOUT=0.2
        ).test_client()
        statuses = [_complete(client, f"silent {i}") for i in range(COMPLETION_LIMIT + 1)]
        assert statuses == [200] * COMPLETION_LIMIT + [429]
        _assert_degraded(client)
        assert [r.getMessage() for r in warnings_logged()] == [
            f"Rate limit storage redis://127.0.0.1:{port} is unreachable: "
            "limits are counted per process until it answers again"
        ]
        assert password not in caplog.text
    finally:
        silent.close()


def test_requests_in_flight_when_redis_dies_are_served(redis_servers, limited_app, warnings_logged):
    # Several threads talk to Redis when it dies: the first to fail switches to memory; the
    # others fail after the switch and must not answer 500 (Flask-Limiter alone raises there).
    port = free_port()
    server = redis_servers(port)
    app = limited_app(port, RATELIMIT_APPLICATION="100000 per hour")
    live = LiveServer(app)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    warmed_up, killed, done = threading.Event(), threading.Event(), threading.Event()
    after_kill: Counter[int] = Counter()

    def hammer() -> None:
        with requests.Session() as session:
            while not done.is_set():
                status = session.get(f"{live.url}/conversations").status_code
                with lock:
                    statuses[status] += 1
                    if sum(statuses.values()) >= 50:
                        warmed_up.set()
                    if killed.is_set():
                        after_kill[status] += 1
                        if sum(after_kill.values()) >= 200:
                            done.set()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        assert warmed_up.wait(60)
        server.kill()
        killed.set()
        assert done.wait(60)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=30)
        live.stop()

    assert set(statuses) == {200}, statuses
    assert len(warnings_logged()) == 1


def test_under_gunicorn_each_worker_falls_back_and_the_metric_spans_them(redis_servers, tmp_path, upstream):
    port = free_port()
    server = redis_servers(port)
    env = upstream_service_env(
        tmp_path,
        upstream,
        WEB_CONCURRENCY="2",
        RATELIMIT_ENABLED="true",
        RATELIMIT_STORAGE_URI=server.url,
        RATELIMIT_DEFAULT="10000 per hour",
        RATELIMIT_COMPLETION="10000 per minute",
    )
    served = Served(env)
    try:
        served.wait_for("LLM upstream: OpenAI at", count=2)

        def complete(i: int) -> int:
            return requests.post(f"{served.url}/openai-completion", json={"prompt": f"g{i}"}, timeout=30).status_code

        assert [complete(i) for i in range(4)] == [200] * 4
        server.kill()
        statuses = [complete(i) for i in range(20)]
        ready = requests.get(f"{served.url}/readyz", timeout=30)
        metrics = requests.get(f"{served.url}/metrics", timeout=30).text
    finally:
        log = served.stop()

    assert statuses == [200] * 20, log
    assert ready.status_code == 200
    assert ready.json()["ratelimit_storage"] == "degraded"
    assert _gauge_in(metrics) == 1  # the largest over the live workers
    # One warning per worker that noticed (each counts on its own), never one per request.
    assert 1 <= log.count("is unreachable: limits are counted per process") <= 2, log
    assert "Traceback" not in log and "unhandled error" not in log, log
