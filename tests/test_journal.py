"""The local journal of exchange endings: ordered, whole lines across processes, poison set
aside, and replayed by itself when a restarted service finds it waiting."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from support import ROOT, create_client_key, poll_until, rows_of

from database import unit_of_work
from extensions import db
from models import ApiKeyUsage, MessageStatus
from services.client_keys import find_active_key, key_id_for, reserve_budget
from services.exchanges import record_turn
from services.journal import EntryRejected, Journal
from services.recorder import Ending, ResponseRecord, replay_entry
from services.responses.store import response_recorded
from services.sweeper import sweep


def test_a_drain_applies_in_order_and_stops_at_the_first_entry_the_database_cannot_take(tmp_path):
    journal = Journal(str(tmp_path / "exchanges.journal"))
    for number in range(5):
        journal.append({"n": number})
    applied = []

    def apply_until_three(entry):
        if entry["n"] == 3:
            raise OSError("the database is still gone")
        applied.append(entry["n"])

    assert journal.drain(apply_until_three) is False
    assert applied == [0, 1, 2]
    assert journal.pending()
    assert journal.drain(lambda entry: applied.append(entry["n"])) is True
    assert applied == [0, 1, 2, 3, 4]
    assert not journal.pending()


def test_entries_the_database_refuses_and_torn_lines_are_set_aside_not_retried(tmp_path):
    journal = Journal(str(tmp_path / "exchanges.journal"))
    journal.append({"n": 1})
    with open(journal.path, "ab") as raw:
        raw.write(b'{"n": 2, "torn\n')  # a line a crash cut short
    journal.append({"n": 3, "poison": True})
    journal.append({"n": 4})
    applied = []

    def apply(entry):
        if entry.get("poison"):
            raise EntryRejected("refused")
        applied.append(entry["n"])

    assert journal.drain(apply) is True
    assert applied == [1, 4]
    assert Path(journal.rejected_path).read_bytes().splitlines() == [b'{"n": 2, "torn', b'{"n":3,"poison":true}']


def test_processes_appending_at_once_leave_whole_lines(tmp_path):
    path = tmp_path / "exchanges.journal"
    writer = (
        "import sys\nfrom services.journal import Journal\n"
        "journal = Journal(sys.argv[1])\n"
        "for n in range(100): journal.append({'writer': sys.argv[2], 'n': n, 'text': 'x' * 5000})\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", writer, str(path), str(w)], cwd=ROOT) for w in range(4)]
    assert [process.wait(timeout=120) for process in processes] == [0] * 4

    entries = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert len(entries) == 400
    for w in range(4):
        assert [e["n"] for e in entries if e["writer"] == str(w)] == list(range(100))


def test_a_restarted_service_replays_the_journal_it_finds_without_being_asked(make_app):
    app = make_app()
    with app.app_context(), unit_of_work() as session:
        record_turn(session, "ex-1", "restarted", None, [{"role": "user", "content": "before the crash"}])
    reply = {"role": "assistant", "content": "kept", "message_fields": None, "model": "fake-model"}
    ending = Ending("ex-1", "restarted", None, MessageStatus.COMPLETED, reply=reply)
    Journal(app.config["JOURNAL_PATH"]).append(ending.as_entry())

    restarted = make_app(JOURNAL_PATH=app.config["JOURNAL_PATH"])

    expected = [("before the crash", "completed"), ("kept", "completed")]
    assert poll_until(lambda: [(r["content"], r["status"]) for r in rows_of(restarted, "restarted")] == expected)
    assert poll_until(lambda: not Journal(app.config["JOURNAL_PATH"]).pending())


def test_a_response_answered_while_the_journal_holds_another_exchange_is_retrievable_at_once(make_app, upstream):
    """A /v1/responses row goes to the journal only behind its own exchange's ending: an
    unrelated entry waiting there must not keep a new response from being read back the
    moment it is answered."""
    app = make_app()
    with app.app_context(), unit_of_work() as session:
        record_turn(session, "ex-waiting", "waiting", None, [{"role": "user", "content": "before"}])
    reply = {"role": "assistant", "content": "kept", "message_fields": None, "model": "fake-model"}
    journal = Journal(app.config["JOURNAL_PATH"])
    entry = Ending("ex-waiting", "waiting", None, MessageStatus.COMPLETED, reply=reply).as_entry()
    journal.append(entry)
    # Another worker is draining the journal: it holds the journal's flock, so this
    # process's replayer cannot take the waiting entry (and an append would wait too).
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_FLOCK, journal.lock_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as holder:
        assert holder.stdout.readline() == b"held\n"
        client = app.test_client()

        answered = client.post("/v1/responses", json={"model": "fake-model", "input": "hello"})

        assert answered.status_code == 200
        assert client.get(f"/v1/responses/{answered.get_json()['id']}").get_json() == answered.get_json()
        waiting = [json.loads(line) for line in Path(journal.path).read_bytes().splitlines()]
        assert waiting == [json.loads(json.dumps(entry))]  # still waiting, and nothing behind it
        holder.stdin.close()  # the other worker lets go
        assert holder.wait(timeout=30) == 0
    app.extensions["exchange_recorder"].wake()
    expected = [("before", "completed"), ("kept", "completed")]
    assert poll_until(lambda: [(r["content"], r["status"]) for r in rows_of(app, "waiting")] == expected)
    assert poll_until(lambda: not journal.pending())


# Holds an flock on argv[1] until stdin closes (at most 20 s, so a regression that
# appends behind the held lock fails the test rather than hanging it).
_HOLD_FLOCK = """
import fcntl, os, select, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
select.select([sys.stdin], [], [], 20)
"""


def test_a_journaled_response_row_is_not_brought_back_for_an_erased_exchange(make_app):
    app = make_app()
    columns = {"id": "resp_erased", "api_key_id": None, "exchange_id": "ex-erased", "user_id": "resp_erased"}
    record = ResponseRecord({**columns, "previous_response_id": None, "store": True, "status": "completed", "body": {}})
    with app.app_context():
        replay_entry(record.as_entry())
        with unit_of_work(write=False) as session:
            assert not response_recorded(session, "resp_erased")


def test_a_journaled_reply_whose_exchange_was_swept_meanwhile_is_still_recorded_and_released_once(make_app):
    # The database was away longer than ABANDON_AFTER_SECONDS: the sweeper closed the
    # exchange (and gave its reservation back) before the journal could replay its reply.
    app = make_app(REQUIRE_API_KEY=True)
    key = create_client_key(app, "metered", "--daily-tokens", "1000")
    with app.app_context():
        key_id = key_id_for(db.session, key[:12])
        with unit_of_work() as session:
            reservation = reserve_budget(session, find_active_key(key), 300)
            record_turn(session, "ex-swept", "swept", key_id, [{"role": "user", "content": "slow"}], 300)
        assert sweep(datetime.now(UTC) + timedelta(hours=1)).exchanges == 1
        reply = {"role": "assistant", "content": "arrived", "message_fields": None, "model": "fake-model"}
        ending = Ending("ex-swept", "swept", key_id, MessageStatus.COMPLETED, None, reply, reservation, (3, 4))
        replay_entry(ending.as_entry())
        with unit_of_work(write=False) as session:
            usage = session.execute(select(ApiKeyUsage).where(ApiKeyUsage.api_key_id == key_id)).scalar_one()

    recorded = [(r["content"], r["status"]) for r in rows_of(app, "swept")]
    assert recorded == [("slow", "completed"), ("arrived", "completed")]
    assert usage.reserved_tokens == 0  # given back once, by the sweeper
    assert (usage.completion_tokens, usage.requests) == (4, 2)  # the swept estimate, then the reply
