"""Accounting of upstream attempts (issue 21, behaviours 11 and 12): every call made for an
exchange is a row of `upstream_attempts`, written with the exchange's ending (journaled with
it when the database refuses, replayed once), never billed; a failed request's rows and log
line name the model it asked for.

Failovers through real deployments are tested in tests/test_routing_*.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fake_upstream import Status
from prometheus_client.parser import text_string_to_metric_families
from support import EMPTY_ALL_TABLES, TcpProxy, all_rows, poll_until, rows_of

from database import unit_of_work
from extensions import db
from models import MessageStatus, UpstreamAttempt, as_utc
from services.exchanges import record_turn
from services.journal import Journal
from services.llm.types import Attempt
from services.recorder import Ending

# A failover as the router reports it: rate-limited on the primary, a stream cut on the
# second deployment, answered by the fallback.
FAILOVER = (
    Attempt("openai-main", "gpt-4o", "UpstreamRateLimited", 120, 429, "The language model is over its rate limit"),
    Attempt("azure-second", "gpt-4o-eu", "cut", 900, 200, "stream broke off: connection reset"),
    Attempt("vllm", "fake-model", "ok", 450, 200),
)
# Every deployment failing: the router's final error carries these.
EXHAUSTED = (
    Attempt("openai-main", "gpt-4o", "UpstreamUnavailable", 80, 503, "The language model failed (HTTP 503)"),
    Attempt("vllm", "llama3", "UpstreamTimeout", 30000, None, "The language model did not answer in time"),
)
REPLY = {"role": "assistant", "content": "kept", "message_fields": None, "model": "fake-model"}


def _rows(exchange_id: str, attempts: tuple[Attempt, ...]) -> list[tuple]:
    """The upstream_attempts rows `attempts` make, as _attempt_rows reads them."""
    return [
        (exchange_id, number, a.deployment, a.model, a.outcome, a.status_code, a.latency_ms, a.error)
        for number, a in enumerate(attempts, 1)
    ]


def _attempt_rows(app) -> list[tuple]:
    """Every upstream_attempts row, in the order written, without id and created_at."""
    return [row[1:-1] for row in sorted(all_rows(app)["upstream_attempts"])]


def _stamps(app) -> set:
    with app.app_context():
        return {as_utc(stamp) for stamp in db.session.scalars(db.select(UpstreamAttempt.created_at))}


def _usage(app) -> tuple | None:
    """The one key's usage: requests, prompt, completion, total tokens, reserved."""
    rows = all_rows(app)["api_key_usage"]
    return rows[0][2:7] if rows else None


def _begin(app, exchange_id: str, conversation_id: str) -> None:
    with app.app_context(), unit_of_work() as session:
        record_turn(session, exchange_id, conversation_id, None, [{"role": "user", "content": "asked"}])


def _replay(app, *entries: dict) -> bool:
    journal = Journal(app.config["JOURNAL_PATH"])
    for entry in entries:
        journal.append(entry)
    return app.extensions["exchange_recorder"].replay()


# -- the recorder ---------------------------------------------------------------------------


def test_an_ending_records_every_attempt_in_order_with_its_exchange(make_app):
    app = make_app()
    _begin(app, "ex-routed", "routed")
    ending = Ending(
        "ex-routed",
        "routed",
        None,
        MessageStatus.COMPLETED,
        reply=REPLY,
        attempts=tuple(a.as_row() for a in FAILOVER),
        model="gpt-4o",
    )

    with app.app_context():
        app.extensions["exchange_recorder"].record(ending)

    assert _attempt_rows(app) == _rows("ex-routed", FAILOVER)
    assert _stamps(app) == {ending.ended_at}
    assert [(r["role"], r["status"], r["model"]) for r in rows_of(app, "routed")] == [
        ("user", "completed", None),
        ("assistant", "completed", "fake-model"),
    ]


def test_a_failed_ending_names_the_requested_model_in_its_rows(make_app):
    app = make_app()
    with app.app_context(), unit_of_work() as session:
        asked = [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "q2"},
        ]
        record_turn(session, "ex-failed", "failed", None, asked)
    attempts = tuple(a.as_row() for a in EXHAUSTED)
    ending = Ending("ex-failed", "failed", None, MessageStatus.FAILED, "all down", attempts=attempts, model="gpt-4o")

    with app.app_context():
        app.extensions["exchange_recorder"].record(ending)

    # The client's own assistant turn names no model: on an assistant row a model marks the reply.
    assert [(r["role"], r["status"], r["error"], r["model"]) for r in rows_of(app, "failed")] == [
        ("user", "failed", "all down", "gpt-4o"),
        ("assistant", "failed", "all down", None),
        ("user", "failed", "all down", "gpt-4o"),
    ]
    assert _attempt_rows(app) == _rows("ex-failed", EXHAUSTED)


def test_a_replayed_ending_writes_its_attempts_once(make_app):
    """The same entry twice (a crash between a replay's commit and the journal's rewrite),
    also for an exchange erased meanwhile, which stays open to its ending."""
    app = make_app()
    _begin(app, "ex-twice", "twice")
    attempts = tuple(a.as_row() for a in FAILOVER)
    kept = Ending("ex-twice", "twice", None, MessageStatus.COMPLETED, reply=REPLY, attempts=attempts).as_entry()
    erased = Ending("ex-erased", "erased", None, MessageStatus.COMPLETED, reply=REPLY, attempts=attempts).as_entry()

    assert _replay(app, kept, erased, kept, erased)

    assert _attempt_rows(app) == _rows("ex-twice", FAILOVER) + _rows("ex-erased", FAILOVER)
    assert [(r["role"], r["status"]) for r in rows_of(app)] == [("user", "completed"), ("assistant", "completed")]


def test_an_entry_journaled_before_attempts_were_recorded_still_replays(make_app):
    app = make_app()
    _begin(app, "ex-old-reply", "old-reply")
    _begin(app, "ex-old-failure", "old-failure")
    entries = [
        Ending("ex-old-reply", "old-reply", None, MessageStatus.COMPLETED, reply=REPLY).as_entry(),
        Ending("ex-old-failure", "old-failure", None, MessageStatus.FAILED, "upstream down").as_entry(),
    ]
    for entry in entries:  # as the recorder wrote them before this issue
        del entry["attempts"], entry["model"]

    assert _replay(app, *entries)

    assert [(r["user_id"], r["role"], r["status"], r["model"]) for r in rows_of(app)] == [
        ("old-reply", "user", "completed", None),
        ("old-failure", "user", "failed", None),
        ("old-reply", "assistant", "completed", "fake-model"),
    ]
    assert _attempt_rows(app) == []
    assert not Path(Journal(app.config["JOURNAL_PATH"]).rejected_path).exists()


def test_a_journaled_attempt_the_table_cannot_take_is_set_aside_not_retried_forever(make_app):
    """A journal line is text: an attempt without its columns is refused before it reaches
    the database, and the entries behind it are still recorded."""
    app = make_app()
    _begin(app, "ex-bad", "bad")
    _begin(app, "ex-good", "good")
    bad = Ending("ex-bad", "bad", None, MessageStatus.COMPLETED, reply=REPLY).as_entry()
    bad["attempts"] = [{"deployment": "openai-main", "outcome": "ok"}]
    too_long = dataclasses.replace(FAILOVER[2], deployment="d" * 300, outcome="o" * 40)
    good = Ending("ex-good", "good", None, MessageStatus.COMPLETED, reply=REPLY, attempts=(too_long.as_row(),))

    assert _replay(app, bad, good.as_entry())

    rejected = Path(Journal(app.config["JOURNAL_PATH"]).rejected_path).read_bytes().splitlines()
    assert [json.loads(line)["exchange_id"] for line in rejected] == ["ex-bad"]
    assert _attempt_rows(app) == [("ex-good", 1, "d" * 255, "fake-model", "o" * 32, 200, 450, None)]


def test_retention_prunes_an_exchange_with_its_attempts(make_app):
    app = make_app()
    long_ago = datetime.now(UTC) - timedelta(days=120)
    for exchange_id, when in (("ex-old", long_ago), ("ex-new", None)):
        with app.app_context(), unit_of_work() as session:
            record_turn(session, exchange_id, exchange_id, None, [{"role": "user", "content": "q"}], now=when)
        attempts = tuple(a.as_row() for a in FAILOVER)
        ending = Ending(exchange_id, exchange_id, None, MessageStatus.COMPLETED, reply=REPLY, attempts=attempts)
        with app.app_context():
            app.extensions["exchange_recorder"].record(ending)

    pruned = app.test_cli_runner().invoke(args=["messages", "prune", "--older-than", "90d"])

    assert pruned.exit_code == 0, pruned.output
    assert {row["exchange_id"] for row in rows_of(app)} == {"ex-new"}
    assert _attempt_rows(app) == _rows("ex-new", FAILOVER)
    with app.app_context(), db.engine.connect() as conn:  # its request log row went with it
        assert conn.execute(sa.text("SELECT exchange_id FROM request_log")).scalars().all() == ["ex-new"]


# -- the database refusing --------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def refusing_database(request, tmp_path, app_factory):
    """An app, and how to make its database refuse writes and take them again: SQLite on a
    2 MB disk the test fills (a tmpfs: needs root), PostgreSQL through a relay it cuts."""
    if request.param == "postgresql":
        url = sa.make_url(request.getfixturevalue("postgres_url"))
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(EMPTY_ALL_TABLES))
        engine.dispose()
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        app = app_factory(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
        yield app, proxy.cut, proxy.restore
        proxy.close()
        return
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 2 MB tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    shutil.copy(request.getfixturevalue("sqlite_template"), disk / "chat_history.db")
    app = app_factory(f"sqlite:///{disk / 'chat_history.db'}")  # its journal: on another disk
    filler = disk / "filler"
    yield app, lambda: _fill(filler), lambda: filler.unlink()
    # Lazily: the app's SQLite writer lock keeps a descriptor open until the process ends.
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def _fill(filler: Path) -> None:
    """Write `filler` until not one more byte fits on its disk."""
    with open(filler, "wb", buffering=0) as stream:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    stream.write(b"\0" * size)
            except OSError:
                pass


def test_an_ending_the_database_refuses_is_journaled_and_its_attempts_recorded_once_it_is_back(refusing_database):
    app, refuse, take_again = refusing_database
    _begin(app, "ex-outage", "outage")
    ending = Ending(
        "ex-outage", "outage", None, MessageStatus.COMPLETED, reply=REPLY, attempts=tuple(a.as_row() for a in FAILOVER)
    )
    recorder = app.extensions["exchange_recorder"]
    journal = Path(app.config["JOURNAL_PATH"])

    refuse()
    with app.app_context():
        recorder.record(ending)
    journaled = journal.read_bytes()
    take_again()
    recorder.wake()

    assert [json.loads(line) for line in journaled.splitlines()] == [json.loads(json.dumps(ending.as_entry()))]
    assert poll_until(lambda: _attempt_rows(app) == _rows("ex-outage", FAILOVER)), _attempt_rows(app)
    assert poll_until(lambda: not Journal(str(journal)).pending())
    assert _stamps(app) == {ending.ended_at}
    # The same entry again: recognised as recorded, its attempts not written twice.
    journal.write_bytes(journaled)
    assert recorder.replay()
    assert _attempt_rows(app) == _rows("ex-outage", FAILOVER)
    assert [(r["role"], r["status"]) for r in rows_of(app, "outage")] == [
        ("user", "completed"),
        ("assistant", "completed"),
    ]


# -- through the service ----------------------------------------------------------------------


@pytest.fixture
def request_log():
    """The `fields` of each request log line written while the test runs."""
    lines: list[dict] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.fields)
    logger = logging.getLogger("gateway.request")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def _attempts_counted(client) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (sample.labels["deployment"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gateway_upstream_attempts_total"
    }


@pytest.mark.parametrize(
    ("path", "ask", "model"),
    [
        (
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "doomed"}]},
            "gpt-4o-mini",
        ),
        ("/openai-completion", {"prompt": "doomed"}, "fake-model"),  # no model asked: the default
    ],
)
def test_a_failed_request_records_and_logs_the_model_it_asked_for(make_app, upstream, request_log, path, ask, model):
    """The one-upstream router (no routing file, no retries in tests): one failed attempt
    recorded, and the model the client asked for named in the rows and the log line."""
    app = make_app()
    upstream.enqueue(Status(500, "upstream broke"))

    failed = app.test_client().post(path, json=ask, headers={"X-Conversation-ID": "asked"})

    assert failed.status_code == 502
    assert [(r["role"], r["status"], r["model"]) for r in rows_of(app)] == [("user", "failed", model)]
    (exchange_id,) = {row["exchange_id"] for row in rows_of(app)}
    assert [row[:6] for row in _attempt_rows(app)] == [(exchange_id, 1, "default", model, "UpstreamUnavailable", 500)]
    (line,) = [line for line in request_log if line["route"] == path]
    assert (line["status"], line["model"], line["attempts"], "deployment" in line) == (502, model, 1, False)


def test_a_reply_its_first_attempt_gave_names_its_deployment_and_writes_no_attempt_row(make_app, upstream):
    """The common case costs no insert: the reply's row says which deployment answered."""
    app = make_app()

    answered = app.test_client().post("/openai-completion", json={"prompt": "hi", "user_id": "first-try"})

    assert answered.status_code == 200
    with app.app_context():
        rows = db.session.execute(
            sa.text("SELECT role, deployment FROM messages WHERE user_id = 'first-try' ORDER BY id")
        ).all()
    assert [tuple(r) for r in rows] == [("user", None), ("assistant", "default")]
    assert _attempt_rows(app) == []
