"""Production shape, for real: several gunicorn processes, shared Redis limits, SQLite under
concurrent writers, graceful SIGTERM, metrics summed across processes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

import requests
import sqlalchemy as sa
from fake_upstream import Hang, Reply
from prometheus_client.parser import text_string_to_metric_families
from support import Served, delta_texts, sse_events, upstream_service_env

WORKER_READY = "LLM upstream: OpenAI at"


def _rows(database_url: str) -> list[tuple]:
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT user_id, exchange_id, role, content, status FROM messages ORDER BY id")
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_sigterm_lets_in_flight_requests_finish_and_record_both_turns(tmp_path, upstream):
    env = upstream_service_env(tmp_path, upstream, WEB_CONCURRENCY="1")
    served = Served(env)
    served.wait_for(WORKER_READY)
    arrived, release = threading.Event(), threading.Event()
    upstream.on_request = lambda _received: arrived.set()
    upstream.enqueue(Hang(release, then=Reply(text="finished after SIGTERM"), max_seconds=30))
    result: dict = {}

    def in_flight():
        result["response"] = requests.post(
            f"{served.url}/openai-completion", json={"prompt": "long one", "user_id": "term"}, timeout=60
        )

    client = threading.Thread(target=in_flight)
    client.start()
    assert arrived.wait(30), "the request never reached the upstream"
    served.process.terminate()  # SIGTERM to the master, as an orchestrator sends it
    served.wait_for("Handling signal: term")
    release.set()
    client.join(60)
    log = served.stop()

    assert result["response"].status_code == 200, log
    assert result["response"].json()["completion"] == "finished after SIGTERM"
    assert served.process.returncode == 0
    rows = _rows(env["DATABASE_URL"])
    assert [(r[2], r[3], r[4]) for r in rows] == [
        ("user", '"long one"', "completed"),
        ("assistant", '"finished after SIGTERM"', "completed"),
    ]


def test_metrics_add_up_across_worker_processes_and_memory_limits_warn(tmp_path, upstream):
    env = upstream_service_env(tmp_path, upstream, WEB_CONCURRENCY="3", GUNICORN_THREADS="4", RATELIMIT_ENABLED="true")
    env["RATELIMIT_DEFAULT"] = "10000 per hour"
    env["RATELIMIT_COMPLETION"] = "10000 per minute"
    served = Served(env)
    try:
        served.wait_for(WORKER_READY, count=3)
        total = 60

        def post(i):
            # A new connection each time, so the kernel spreads them over the workers.
            return requests.post(f"{served.url}/openai-completion", json={"prompt": f"m{i}"}, timeout=30).status_code

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(post, range(total)))
        scrapes = [requests.get(f"{served.url}/metrics", timeout=30).text for _ in range(6)]
    finally:
        log = served.stop()

    assert statuses == [200] * total
    workers = {line["pid"] for line in served.request_lines() if line["route"] == "/openai-completion"}
    assert len(workers) > 1, "all requests went to one worker: the test proves nothing"
    for text in scrapes:  # whichever worker answers the scrape, it reports every worker's count
        counted = [
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "gateway_http_requests_total"
            and sample.labels == {"route": "/openai-completion", "method": "POST", "status": "200"}
        ]
        assert counted == [total]
    assert "RATELIMIT_STORAGE_URI is memory:// with 3 worker processes" in log


def _admitted(servers, attempts: int) -> int:
    urls = cycle(s.url for s in servers)
    statuses = [
        requests.post(f"{next(urls)}/openai-completion", json={"prompt": f"r{i}"}, timeout=30).status_code
        for i in range(attempts)
    ]
    assert set(statuses) <= {200, 429}
    return statuses.count(200)


def _limited_pair(tmp_path, upstream, storage: str):
    servers = []
    for name in ("host-a", "host-b"):
        folder = tmp_path / name
        folder.mkdir()
        env = upstream_service_env(folder, upstream, WEB_CONCURRENCY="2", RATELIMIT_ENABLED="true")
        env.update(
            {
                "RATELIMIT_STORAGE_URI": storage,
                "RATELIMIT_DEFAULT": "10000 per hour",
                "RATELIMIT_COMPLETION": "7 per minute",
                # Both "hosts" share one database, as they would share PostgreSQL.
                "DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
            }
        )
        servers.append(Served(env))
    try:
        for server in servers:
            server.wait_for(WORKER_READY, count=2)
    except BaseException:  # wait_for stops only its own server: the other would outlive the run
        for server in servers:
            server.stop()
        raise
    return servers


def test_redis_makes_the_limit_one_budget_across_processes_and_hosts(tmp_path, upstream, redis_url):
    servers = _limited_pair(tmp_path, upstream, redis_url)
    try:
        admitted = _admitted(servers, attempts=30)
    finally:
        for server in servers:
            server.stop()
    assert admitted == 7


def test_memory_storage_counts_per_process_which_is_why_redis_is_needed(tmp_path, upstream):
    servers = _limited_pair(tmp_path, upstream, "memory://")
    try:
        admitted = _admitted(servers, attempts=30)
    finally:
        for server in servers:
            server.stop()
    # Each of the 2 hosts x 2 processes keeps its own count.
    assert admitted > 7


def test_sqlite_takes_many_concurrent_writers_without_locking_errors(tmp_path, upstream):
    env = upstream_service_env(tmp_path, upstream, WEB_CONCURRENCY="3", GUNICORN_THREADS="8")
    served = Served(env)
    users = [f"writer-{n}" for n in range(20)]
    total = 200
    try:
        served.wait_for(WORKER_READY, count=3)

        def post(i):
            user_id = users[i % len(users)]
            return requests.post(
                f"{served.url}/openai-completion", json={"prompt": f"{user_id} #{i}", "user_id": user_id}, timeout=60
            )

        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(post, range(total)))
    finally:
        log = served.stop()

    failures = [(r.status_code, r.text) for r in responses if r.status_code != 200]
    assert failures == [], log
    assert "database is locked" not in log
    rows = _rows(env["DATABASE_URL"])
    assert len(rows) == 2 * total  # no lost row
    assert {r[4] for r in rows} == {"completed"}
    exchanges: dict[str, list] = {}
    for user_id, exchange_id, role, content, _status in rows:
        exchanges.setdefault(exchange_id, []).append((user_id, role, content))
    assert len(exchanges) == total
    for turns in exchanges.values():
        (user_a, role_a, asked), (user_b, role_b, answered) = turns
        assert (role_a, role_b) == ("user", "assistant") and user_a == user_b
        assert answered == asked.replace('"', '"echo: ', 1)
    engine = sa.create_engine(env["DATABASE_URL"])
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_a_stream_longer_than_the_worker_timeout_completes(tmp_path, upstream):
    from fake_upstream import StreamReply

    env = upstream_service_env(tmp_path, upstream, WEB_CONCURRENCY="1", TIMEOUT="2")
    served = Served(env)
    resume = threading.Event()
    upstream.enqueue(StreamReply(["slow ", "but ", "complete"], hold_after=1, resume=resume))
    try:
        served.wait_for(WORKER_READY)
        # The stream stays open three times the worker timeout: the duration is what is tested.
        timer = threading.Timer(6, resume.set)
        timer.start()
        with requests.post(
            f"{served.url}/openai-completion",
            json={"prompt": "take your time", "user_id": "slow-stream", "stream": True},
            stream=True,
            timeout=60,
        ) as response:
            text = response.text
        timer.join()
    finally:
        log = served.stop()

    assert "WORKER TIMEOUT" not in log
    deltas = delta_texts(sse_events(text.splitlines()))
    assert "".join(deltas) == "slow but complete"
    assert "event: done" in text
    rows = _rows(env["DATABASE_URL"])
    assert [(r[2], r[4]) for r in rows] == [("user", "completed"), ("assistant", "completed")]
