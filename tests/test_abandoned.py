"""Exchanges a dead process left `pending` are closed as `abandoned`, and their keys charged once.

The sweep itself runs on both backends against rows written with old timestamps; the real
faults run gunicorn and kill its worker (SIGKILL), or let GRACEFUL_TIMEOUT cut a call short.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import requests
from fake_upstream import Hang, Reply, StreamReply
from support import (
    LiveServer,
    Served,
    bearer,
    create_client_key,
    rows_of,
    run_flask,
    upstream_service_env,
)

from extensions import db
from models import Message
from services.client_keys import key_id_for
from services.sweeper import ABANDONED_ERROR, sweep
from services.tokens import estimate_message_tokens

WORKER_READY = "LLM upstream: OpenAI at"


def _add_exchange(user_id, status, age, contents, key_id=None, heartbeat_age=None) -> None:
    """An exchange of user turns `contents`, recorded `age` ago, as the pipeline records one."""
    now = datetime.now(UTC)
    heartbeat = now - heartbeat_age if heartbeat_age is not None else None
    for content in contents:
        db.session.add(
            Message(
                user_id=user_id,
                exchange_id=f"{user_id}-exchange",
                api_key_id=key_id,
                role="user",
                content=content,
                status=status,
                timestamp=now - age,
                heartbeat_at=heartbeat,
            )
        )


def _usage_today(app, key: str) -> tuple[int, int]:
    listed = app.test_cli_runner().invoke(args=["keys", "list", "--json"]).stdout.splitlines()
    mine = next(json.loads(line) for line in listed if json.loads(line)["prefix"] == key[:12])
    return mine["tokens_today"], mine["requests_today"]


def _estimate(*contents) -> int:
    return sum(estimate_message_tokens({"role": "user", "content": c}) for c in contents)


def test_the_sweep_closes_only_old_unheartbeated_pending_exchanges_and_charges_each_once(make_app):
    app = make_app(ABANDON_AFTER_SECONDS=300)
    key = create_client_key(app)
    long_ago, just_now = timedelta(minutes=10), timedelta(seconds=5)
    parts = [{"type": "text", "text": "what is in this picture?"}, {"type": "image_url", "image_url": {"url": "x"}}]
    with app.app_context():
        key_id = key_id_for(db.session, key[:12])
        _add_exchange("dead-keyed", "pending", long_ago, ["first question", parts], key_id=key_id)
        _add_exchange("dead-keyless", "pending", long_ago, ["nobody pays for this"])
        _add_exchange("in-flight", "pending", just_now, ["still waiting"], key_id=key_id)
        _add_exchange("long-stream", "pending", long_ago, ["still streaming"], key_id=key_id, heartbeat_age=just_now)
        _add_exchange("done", "completed", long_ago, ["answered long ago"], key_id=key_id)
        db.session.commit()

    first = app.test_cli_runner().invoke(args=["messages", "sweep"])
    again = app.test_cli_runner().invoke(args=["messages", "sweep"])

    assert first.exit_code == 0, first.output
    expected = _estimate("first question", parts)
    assert "Closed 2 exchanges pending since before " in first.output
    assert first.output.rstrip().endswith(f"charged keys {expected} estimated prompt tokens")
    assert again.output.startswith("Closed 0 exchanges")
    statuses = {(r["user_id"], r["status"], r["error"]) for r in rows_of(app)}
    assert statuses == {
        ("dead-keyed", "abandoned", ABANDONED_ERROR),
        ("dead-keyless", "abandoned", ABANDONED_ERROR),
        ("in-flight", "pending", None),
        ("long-stream", "pending", None),
        ("done", "completed", None),
    }
    assert _usage_today(app, key) == (expected, 1)
    usage = app.test_client().get("/conversations/dead-keyless/usage").get_json()
    assert usage["exchanges"] == {"total": 1, "completed": 0, "failed": 0, "pending": 0, "abandoned": 1}


def test_the_sweep_closes_whole_exchanges_in_batches(make_app):
    app = make_app()
    key = create_client_key(app)
    cut = datetime.now(UTC) - timedelta(minutes=5)
    with app.app_context():
        key_id = key_id_for(db.session, key[:12])
        for n in range(3):
            # The rows of one exchange straddle the cut-off (recorded microseconds apart).
            for when, content in ((cut - timedelta(microseconds=1), f"older {n}"), (cut, f"newer {n}")):
                db.session.add(
                    Message(
                        user_id=f"straddle-{n}",
                        exchange_id=f"ex-{n}",
                        api_key_id=key_id,
                        role="user",
                        content=content,
                        status="pending",
                        timestamp=when,
                    )
                )
        db.session.commit()
        result = sweep(cut, batch_size=1)

    expected = _estimate(*[f"{age} {n}" for n in range(3) for age in ("older", "newer")])
    assert (result.exchanges, result.charged_tokens) == (3, expected)
    assert {r["status"] for r in rows_of(app)} == {"abandoned"}
    assert _usage_today(app, key) == (expected, 3)


def test_sweepers_racing_in_two_apps_charge_every_abandoned_exchange_exactly_once(make_app):
    apps = [make_app(), make_app()]
    key = create_client_key(apps[0])
    with apps[0].app_context():
        key_id = key_id_for(db.session, key[:12])
        for n in range(30):
            _add_exchange(f"dead-{n}", "pending", timedelta(hours=1), [f"question number {n}"], key_id=key_id)
        db.session.commit()
    start = threading.Barrier(4)
    results = []

    def sweeper(app) -> None:
        with app.app_context():
            start.wait()
            for _ in range(3):
                results.append(sweep(datetime.now(UTC) - timedelta(minutes=1), batch_size=4))

    threads = [threading.Thread(target=sweeper, args=(apps[n % 2],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    expected = _estimate(*[f"question number {n}" for n in range(30)])
    assert sum(r.exchanges for r in results) == 30
    assert sum(r.charged_tokens for r in results) == expected
    assert {r["status"] for r in rows_of(apps[0])} == {"abandoned"}
    assert _usage_today(apps[0], key) == (expected, 30)


def _read_until_heartbeat(app, lines, user_id: str) -> tuple[datetime, datetime | None]:
    """Read the stream (so it goes on) until its user row has a heartbeat, or 20 s pass;
    return the row's timestamp and heartbeat, in UTC."""
    deadline = time.monotonic() + 20
    while True:
        next(lines)
        with app.app_context():
            row = db.session.scalars(db.select(Message).where(Message.user_id == user_id)).one()
            recorded, heartbeat = row.timestamp.replace(tzinfo=UTC), row.heartbeat_at
        if heartbeat is not None or time.monotonic() > deadline:
            return recorded, heartbeat and heartbeat.replace(tzinfo=UTC)


def test_a_live_stream_keeps_its_exchange_alive_past_the_cut_off(make_app, upstream):
    # A quarter of the 2 s cut-off: the stream touches its rows every half second.
    app = make_app(ABANDON_AFTER_SECONDS=2)
    server = LiveServer(app)
    upstream.enqueue(StreamReply(["and ", "on "], endless=True))
    try:
        with requests.post(
            f"{server.url}/openai-completion",
            json={"prompt": "talk for a long time", "user_id": "live", "stream": True},
            stream=True,
            timeout=30,
        ) as response:
            lines = response.iter_lines(decode_unicode=True)
            recorded, heartbeat = _read_until_heartbeat(app, lines, "live")
            assert heartbeat is not None, "the stream never marked its exchange alive"
            # Recorded before this cut-off, heartbeated after it: alive, so left alone.
            with app.app_context():
                assert sweep(recorded + (heartbeat - recorded) / 2).exchanges == 0
            assert rows_of(app, "live")[0]["status"] == "pending"
        assert server.wait_idle()
    finally:
        server.stop()
    assert [r["status"] for r in rows_of(app, "live")] == ["disconnected", "disconnected"]


def test_a_reply_after_its_exchange_was_closed_as_abandoned_gives_the_reservation_back_once(make_app, upstream):
    # An ABANDON_AFTER_SECONDS below a call's time: the sweeper closes the live exchange,
    # gives its reservation back and charges the prompt; then the reply arrives after all.
    app = make_app(REQUIRE_API_KEY=True)
    key = create_client_key(app, "metered", "--daily-tokens", "100000")
    arrived, release = threading.Event(), threading.Event()
    upstream.on_request = lambda _received: arrived.set()
    upstream.enqueue(Hang(release, then=Reply(text="late but here"), max_seconds=30))
    answered: dict = {}

    def ask() -> None:
        body = {"prompt": "slow one", "user_id": "late"}
        answered["response"] = app.test_client().post("/openai-completion", json=body, headers=bearer(key))

    client = threading.Thread(target=ask)
    client.start()
    try:
        assert arrived.wait(30), "the request never reached the upstream"
        with app.app_context():
            assert sweep(datetime.now(UTC) + timedelta(hours=1)).exchanges == 1
        assert _reserved_today(app, key) == 0
    finally:
        release.set()
        client.join(30)

    assert answered["response"].status_code == 200
    assert [r["status"] for r in rows_of(app, "late")] == ["completed", "completed"]
    assert _reserved_today(app, key) == 0  # given back once, not twice


def _reserved_today(app, key: str) -> int:
    listed = app.test_cli_runner().invoke(args=["keys", "list", "--json"]).stdout.splitlines()
    return next(json.loads(line) for line in listed if json.loads(line)["prefix"] == key[:12])["reserved_today"]


def _worker_pid(served: Served) -> int:
    """The pid of the (only) worker gunicorn booted, checked to be the master's child."""
    booted = [re.search(r"Booting worker with pid: (\d+)", line) for line in served.output]
    pid = int([m for m in booted if m][-1].group(1))
    with open(f"/proc/{pid}/stat") as stat:
        assert int(stat.read().rsplit(")", 1)[1].split()[1]) == served.process.pid
    return pid


def _upstream_env(tmp_path, upstream, **extra) -> dict[str, str]:
    return upstream_service_env(tmp_path, upstream, WEB_CONCURRENCY="1", **extra)


def _reserved_by_exchanges(env) -> int:
    """What the exchanges' first rows say they reserved of their key's budget."""
    import sqlalchemy as sa

    engine = sa.create_engine(env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT COALESCE(SUM(reserved_tokens), 0) FROM messages")).scalar_one()
    finally:
        engine.dispose()


def _poll_statuses(env, want: str, seconds: float = 30) -> list[tuple]:
    """The user rows' (user_id, status, error), once all are `want` (or the time is up)."""
    import sqlalchemy as sa

    engine = sa.create_engine(env["DATABASE_URL"])
    deadline = time.monotonic() + seconds
    try:
        while True:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT user_id, status, error FROM messages ORDER BY id")).all()
            if (rows and {r[1] for r in rows} == {want}) or time.monotonic() > deadline:
                return [tuple(r) for r in rows]
            time.sleep(0.2)
    finally:
        engine.dispose()


def _in_flight(served, key, upstream, release) -> tuple[list, dict]:
    """A stream (one delta received) and three plain requests, all held by the upstream."""
    arrived = threading.Semaphore(0)
    upstream.on_request = lambda _received: arrived.release()
    upstream.enqueue(StreamReply(["first ", "never sent"], hold_after=1, resume=release))
    stream = requests.post(
        f"{served.url}/openai-completion",
        json={"prompt": "stream a story", "user_id": "killed-stream", "stream": True},
        headers=bearer(key),
        stream=True,
        timeout=60,
    )
    lines = stream.iter_lines(decode_unicode=True)
    assert next(line for line in lines if line.startswith("data: ")) == 'data: {"text": "first "}'
    upstream.enqueue(*[Hang(release, then=Reply(text="too late"), max_seconds=60) for _ in range(3)])
    outcomes: dict = {"stream": lines}

    def ask(n: int) -> None:
        try:
            response = requests.post(
                f"{served.url}/openai-completion",
                json={"prompt": f"question {n}", "user_id": f"killed-{n}"},
                headers=bearer(key),
                timeout=60,
            )
            outcomes[n] = response.status_code
        except requests.ConnectionError as exc:
            outcomes[n] = type(exc).__name__

    clients = [threading.Thread(target=ask, args=(n,)) for n in range(3)]
    for client in clients:
        client.start()
    for _ in range(4):
        assert arrived.acquire(timeout=30), "a request never reached the upstream"
    return clients, outcomes


def test_a_killed_worker_leaves_nothing_pending_and_its_keys_pay_the_prompts_not_the_reservations(tmp_path, upstream):
    env = _upstream_env(
        tmp_path, upstream, REQUIRE_API_KEY="true", ABANDON_AFTER_SECONDS="2", SWEEP_INTERVAL_SECONDS="1"
    )
    served = Served(env)
    release = threading.Event()
    try:
        served.wait_for(WORKER_READY)
        created = run_flask(env, "keys", "create", "--name", "acme", "--daily-tokens", "1000000")
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        clients, outcomes = _in_flight(served, key, upstream, release)

        os.kill(_worker_pid(served), signal.SIGKILL)

        for client in clients:
            client.join(60)
        try:
            rest = list(outcomes["stream"])
        except requests.exceptions.ChunkedEncodingError:
            rest = ["the connection broke off"]
        rows = _poll_statuses(env, "abandoned")
        usage = requests.get(f"{served.url}/conversations/killed-stream/usage", headers=bearer(key), timeout=30)
        listed = json.loads(run_flask(env, "keys", "list", "--json").stdout)
    finally:
        release.set()
        log = served.stop()

    assert [outcomes[n] for n in range(3)] == ["ConnectionError"] * 3  # the connections closed
    assert not any("event: done" in line for line in rest)
    assert sorted(rows) == sorted(
        [(f"killed-{n}", "abandoned", ABANDONED_ERROR) for n in range(3)]
        + [("killed-stream", "abandoned", ABANDONED_ERROR)]
    ), log
    assert usage.json()["exchanges"] == {"total": 1, "completed": 0, "failed": 0, "pending": 0, "abandoned": 1}
    prompts = _estimate("stream a story", *[f"question {n}" for n in range(3)])
    assert (listed["tokens_today"], listed["requests_today"]) == (prompts, 4)
    # What the four requests reserved while in flight is given back: the budget is whole again.
    assert _reserved_by_exchanges(env) > 4 * 1024 and listed["reserved_today"] == 0
    assert "exchanges as abandoned" in log


def test_a_call_cut_short_by_graceful_timeout_is_closed_when_the_service_starts_again(tmp_path, upstream):
    env = _upstream_env(tmp_path, upstream, GRACEFUL_TIMEOUT="1")
    served = Served(env)
    arrived, release = threading.Event(), threading.Event()
    upstream.on_request = lambda _received: arrived.set()
    upstream.enqueue(Hang(release, then=Reply(text="too late"), max_seconds=60))
    outcome: dict = {}

    def ask() -> None:
        try:
            requests.post(f"{served.url}/openai-completion", json={"prompt": "slow", "user_id": "cut"}, timeout=60)
        except requests.ConnectionError as exc:
            outcome["error"] = type(exc).__name__

    client = threading.Thread(target=ask)
    try:
        served.wait_for(WORKER_READY)
        client.start()
        assert arrived.wait(30), "the request never reached the upstream"
        served.process.terminate()  # SIGTERM; the call outlives GRACEFUL_TIMEOUT
        served.process.wait(30)
        client.join(30)
    finally:
        first_log = served.stop()
    assert outcome == {"error": "ConnectionError"}, first_log

    # The exchange is at least GRACEFUL_TIMEOUT old now; a sweep every hour means only the
    # one at start-up can close it.
    restarted = Served({**env, "ABANDON_AFTER_SECONDS": "0.5", "SWEEP_INTERVAL_SECONDS": "3600"})
    try:
        rows = _poll_statuses(env, "abandoned")
    finally:
        release.set()
        restarted.stop()
    assert rows == [("cut", "abandoned", ABANDONED_ERROR)]
