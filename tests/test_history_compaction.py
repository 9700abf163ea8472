"""Stored conversations summarise what trimming leaves out (issue 24, items 1-5): the fake
upstream is the summariser (deterministic: it keeps every line that says "Remember"), so a fact
stated in the first of 60 turns reaches turn 61 in the summary; a failing, slow, empty or
cut-off summariser leaves the conversation as it was (plain trimming) and is counted in
/metrics; two summarisers of one conversation at once make one summary (the database lease);
DELETE and retention erase summaries; the official SDK's types parse the Conversations API's
compaction item."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import replace
from datetime import timedelta

import openai
import pytest
from fake_upstream import Hang, RawBody, Reply, Status
from openai.types.responses import ResponseCompactionItem
from sqlalchemy import func, select
from support import LiveServer, deployment

from database import unit_of_work
from models import Message, RequestLog, RequestRollup
from services.compactor import Job
from services.conversations import delete_conversation, prune_batch
from services.history import HistoryLimits
from services.responses.compaction import SUMMARISER_PROMPT, app_sealer
from services.summaries import SUMMARY_PREFIX, lease_name, lock_lease, record_summary, take_lease
from services.tokens import estimate_message_tokens

FACT = "Remember: my locker code is 4417."
FILLER = "and here is some more talk about the weather, the garden and the week ahead. " * 3
# A small history budget, so a few turns fill it and trimming starts early.
SETTINGS = {"COMPACTION_HISTORY": True, "HISTORY_MAX_TOKENS": 600, "HISTORY_MAX_MESSAGES": 50}


def _is_summariser(body: dict) -> bool:
    messages = body.get("messages") or []
    return bool(messages) and messages[0].get("content") == SUMMARISER_PROMPT


def _summarise_remembered(upstream) -> None:
    """Make the fake upstream a deterministic summariser: it keeps every 'Remember' sentence."""

    def answer(received) -> None:
        if _is_summariser(received.body):
            text = received.body["messages"][-1]["content"]
            facts = sorted(set(re.findall(r"Remember: [^.]*\.", text)))
            upstream.enqueue(Reply(text="Facts: " + " ".join(facts) if facts else "Small talk only."))

    upstream.on_request = answer


def _turn(client, app, user_id: str, prompt: str) -> None:
    response = client.post("/openai-completion", json={"prompt": prompt, "user_id": user_id})
    assert response.status_code == 200, response.get_json()
    assert app.extensions["compactor"].wait_idle(30)


def _turn_requests(upstream) -> list[dict]:
    return [body for body in upstream.chat_requests() if not _is_summariser(body)]


def _summary_in(body: dict) -> str | None:
    summaries = [m["content"] for m in body["messages"] if str(m.get("content", "")).startswith(SUMMARY_PREFIX)]
    return summaries[0] if summaries else None


def _counted(client, outcome: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    found = re.search(rf'gateway_compactions_total{{outcome="{outcome}"}} ([0-9.]+)', text)
    return float(found.group(1)) if found else 0.0


def _summaries(app) -> list[dict]:
    with app.app_context(), unit_of_work(write=False) as session:
        rows = session.scalars(select(Message).where(Message.status == "summary").order_by(Message.id))
        return [{**row.to_dict(), "compacts_through": row.compacts_through} for row in rows]


def test_turn_61_carries_a_summary_that_holds_the_first_turns_fact(make_app, upstream):
    app = make_app(**SETTINGS)
    client = app.test_client()
    _summarise_remembered(upstream)
    _turn(client, app, "long", FACT)
    sizes = []
    for number in range(2, 62):
        _turn(client, app, "long", f"turn {number}: {FILLER}")
        sizes.append(len(json.dumps(_turn_requests(upstream)[-1]["messages"])))
    sent = _turn_requests(upstream)[-1]
    summary = _summary_in(sent)
    assert summary is not None and "4417" in summary
    assert sent["messages"][0]["role"] == "system" and sent["messages"][-1]["content"].startswith("turn 61")
    # Bounded: the request of turn 61 is no larger than those of turn 20, however long it grew.
    assert max(sizes[40:]) <= max(sizes[:20]) + 200
    summarising = [body for body in upstream.chat_requests() if _is_summariser(body)]
    assert 1 <= len(summarising) <= 20  # now and then, never once per turn
    rows = _summaries(app)
    assert rows and all(row["role"] == "compaction" and row["model"] == "fake-model" for row in rows)
    assert rows[-1]["total_tokens"] and rows[-1]["message_fields"]["compacts_through"]
    shown = client.get("/conversations/long").get_json()
    assert any(row["role"] == "compaction" and "4417" in row["content"] for row in shown["messages"])
    # Each summarising call is in the request log and the console's rollups, as any exchange.
    with app.app_context(), unit_of_work(write=False) as session:
        logged = session.scalars(select(RequestLog).where(RequestLog.route == "compaction")).all()
        rolled = session.scalar(select(func.sum(RequestRollup.requests)).where(RequestRollup.route == "compaction"))
    assert len(logged) == len(rows) == rolled
    assert {(row.user_id, row.status, row.model) for row in logged} == {("long", "completed", "fake-model")}
    assert sorted(row.exchange_id for row in logged) == sorted(row["exchange_id"] for row in rows)


def _cut_off() -> RawBody:
    choice = {"index": 0, "message": {"role": "assistant", "content": "Facts: Remem"}, "finish_reason": "length"}
    body = {"id": "chatcmpl-cut", "object": "chat.completion", "created": 0, "model": "fake-model"}
    body.update(choices=[choice], usage={"prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21})
    return RawBody(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (Status(500, "summariser down"), "failed"),
        (Hang(threading.Event(), max_seconds=5), "timeout"),
        (Reply(text="  "), "empty"),
        (_cut_off(), "cut_off"),
    ],
    ids=["500", "timeout", "empty", "cut_off"],
)
def test_a_failing_summariser_leaves_the_history_as_it_was(make_app, upstream, answer, outcome):
    app = make_app(**SETTINGS, COMPACTION_TIMEOUT=0.5)
    client = app.test_client()
    before = _counted(client, outcome)

    def fail(received) -> None:
        if _is_summariser(received.body):
            upstream.enqueue(answer)

    upstream.on_request = fail
    _turn(client, app, "faulty", FACT)
    for number in range(2, 12):
        _turn(client, app, "faulty", f"turn {number}: {FILLER}")
    # Tried once, then not again for COMPACTION_RETRY_SECONDS: never one call per turn.
    assert sum(_is_summariser(body) for body in upstream.chat_requests()) == 1
    assert _summaries(app) == []
    sent = _turn_requests(upstream)[-1]
    assert _summary_in(sent) is None  # plain trimming: the oldest turns are simply left out
    assert all(FACT not in json.dumps(m) for m in sent["messages"])
    assert _counted(client, outcome) > before
    # A refused summary's call spent tokens: it is in the request log, failed, with why.
    with app.app_context(), unit_of_work(write=False) as session:
        logged = session.execute(select(RequestLog.status, RequestLog.error).where(RequestLog.route == "compaction"))
        logged = logged.all()
    if outcome in ("empty", "cut_off"):
        assert [status for status, _ in logged] == ["failed"] and logged[0][1], logged
    else:
        assert logged == []  # the upstream answered nothing: nothing was spent


def test_two_summarisers_at_once_make_one_summary(make_app, upstream):
    app = make_app(**SETTINGS)
    client = app.test_client()
    compactor = app.extensions["compactor"]
    compactor.settings = replace(compactor.settings, enabled=False)  # the turns below only fill it
    _turn(client, app, "both", FACT)
    for number in range(2, 12):
        _turn(client, app, "both", f"turn {number}: {FILLER}")
    release, arrived = threading.Event(), threading.Event()

    def hold(received) -> None:
        if _is_summariser(received.body):
            upstream.enqueue(Hang(release, then=Reply(text="Facts: Remember: my locker code is 4417.")))
            arrived.set()

    upstream.on_request = hold
    job = Job("both", None, "fake-model", HistoryLimits(50, 600), 40)
    compactor.settings, outcomes = replace(compactor.settings, enabled=True), []

    def run() -> None:
        with app.app_context():
            outcomes.append(compactor.run(job))

    first = threading.Thread(target=run)
    first.start()
    assert arrived.wait(10)  # the first holds the lease while the model writes
    run()  # the second, concurrently: the lease is taken
    release.set()
    first.join(10)
    assert sorted(outcomes) == ["busy", "made"]
    assert len(_summaries(app)) == 1


def test_a_summary_stops_before_an_exchange_still_in_flight(make_app, upstream):
    """An exchange that began before later ones and is still pending when the summary is made
    completes behind it: the summary covers nothing from it on, so it is sent when it is done."""
    app = make_app(**SETTINGS)
    client = app.test_client()
    compactor = app.extensions["compactor"]
    compactor.settings = replace(compactor.settings, enabled=False)  # the turns below only fill it
    _summarise_remembered(upstream)
    _turn(client, app, "inflight", FACT)
    for number in range(2, 4):
        _turn(client, app, "inflight", f"turn {number}: {FILLER}")
    with app.app_context(), unit_of_work() as session:  # a long answer, begun now, not done yet
        session.add(Message(user_id="inflight", exchange_id="slow-1", role="user", content="slow", status="pending"))
    with app.app_context(), unit_of_work(write=False) as session:
        pending_id = session.scalar(select(Message.id).where(Message.exchange_id == "slow-1"))
    for number in range(4, 14):
        _turn(client, app, "inflight", f"turn {number}: {FILLER}")
    compactor.settings = replace(compactor.settings, enabled=True)
    with app.app_context():
        assert compactor.run(Job("inflight", None, "fake-model", HistoryLimits(50, 600), 40)) == "made"
    rows = _summaries(app)
    assert rows and all(row["compacts_through"] < pending_id for row in rows)


def _summarised(make_app, upstream, user_id: str):
    app = make_app(**SETTINGS)
    client = app.test_client()
    _summarise_remembered(upstream)
    _turn(client, app, user_id, FACT)
    for number in range(2, 10):
        _turn(client, app, user_id, f"turn {number}: {FILLER}")
    assert _summaries(app)
    return app, client


def test_delete_erases_the_summaries(make_app, upstream):
    app, client = _summarised(make_app, upstream, "erase-me")
    assert client.delete("/conversations/erase-me").status_code in (200, 204)
    assert _summaries(app) == []
    # Nothing of it names it afterwards: its request log rows (summarising calls' too) went
    # with it; the day's rollups, counts with no conversation in them, stay.
    with app.app_context(), unit_of_work(write=False) as session:
        assert session.scalars(select(RequestLog).where(RequestLog.user_id == "erase-me")).all() == []
        assert session.scalar(select(func.sum(RequestRollup.requests))) > 0


def test_retention_erases_a_summary_with_the_exchanges_it_covers(make_app, upstream):
    app, _ = _summarised(make_app, upstream, "old")
    with app.app_context(), unit_of_work(write=False) as session:
        first = session.scalar(select(func.min(Message.timestamp)).where(Message.user_id == "old"))
    with app.app_context(), unit_of_work() as session:
        # Only the first exchange is past retention: the summaries holding it go with it.
        prune_batch(session, first + timedelta(microseconds=1), 1)
    assert _summaries(app) == []


def test_the_sdk_parses_the_conversations_compaction_item(make_app, upstream):
    app = make_app(**SETTINGS)
    _summarise_remembered(upstream)
    server = LiveServer(app)
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    conversation = sdk.conversations.create()
    for number in range(10):
        prompt = FACT if number == 0 else f"turn {number}: {FILLER}"
        sdk.responses.create(model="fake-model", input=prompt, conversation=conversation.id, truncation="auto")
        assert app.extensions["compactor"].wait_idle(30)
    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    compactions = [item for item in items if isinstance(item, ResponseCompactionItem)]
    assert compactions and compactions[0].id.startswith("cmp_") and compactions[0].encrypted_content
    with app.app_context():
        opened = app_sealer(app).open(compactions[0].model_dump(), None, "item")
    assert "4417" in opened.summary
    again = sdk.conversations.items.retrieve(compactions[0].id, conversation_id=conversation.id)
    assert isinstance(again, ResponseCompactionItem)
    # The user erases the message that said the fact: the summaries holding it go with it.
    said = next(item for item in items if item.type == "message" and FACT in json.dumps(item.model_dump()))
    sdk.conversations.items.delete(said.id, conversation_id=conversation.id)
    left = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert not [item for item in left if isinstance(item, ResponseCompactionItem)]
    assert _summaries(app) == []
    sdk.close()
    server.stop()


def test_without_history_max_tokens_a_routed_groups_window_sizes_the_history(routed, fault_upstreams):
    """Issue 24, 5: HISTORY_MAX_TOKENS unset and every deployment of the group declaring its
    context_window, the history sent is that window less the reply's cap; a group that
    declares none keeps the HISTORY_MAX_TOKENS default's (much larger) budget."""
    small_server, open_server = fault_upstreams(2)
    small = deployment(small_server, "small", model="small-model", context_window=700)
    roomy = deployment(open_server, "roomy", model="roomy-model")
    app, server = routed(
        {"small": {"deployments": [small]}, "roomy": {"deployments": [roomy]}},
        HISTORY_MAX_TOKENS_SET=False,
        COMPACTION_HISTORY=False,
    )
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    for model, upstream in (("small", small_server), ("roomy", open_server)):
        for number in range(12):
            sdk.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": f"turn {number}: {FILLER}"}],
                max_tokens=200,
                extra_headers={"X-Conversation-Id": f"window-{model}"},
            )
        sent = upstream.chat_requests()[-1]["messages"]
        estimated = sum(estimate_message_tokens(message) for message in sent)
        if model == "small":
            assert estimated <= 700 - 200 and len(sent) < 23, (estimated, len(sent))
        else:
            assert len(sent) == 23  # eleven whole exchanges and the turn: nothing trimmed
    sdk.close()


def test_an_erasure_waits_for_a_summary_being_stored_then_takes_it_too(make_app, upstream, request):
    """The summariser stores its summary holding its lease locked; an erasure deletes the lease
    first, so it waits for that transaction, and the rows it then deletes include the summary
    (PostgreSQL, READ COMMITTED: without the lock, a summary committed just after the erasure's
    check would outlive the conversation). An erasure first leaves the summariser no lease."""
    if "postgresql" not in request.node.callspec.id:
        pytest.skip("SQLite's writers take turns: there is no such race to order")
    app, _ = _summarised(make_app, upstream, "racing")
    with app.app_context(), unit_of_work() as session:
        assert take_lease(session, lease_name("racing", None), "summariser", 60)
    erased = threading.Event()

    def erase() -> None:
        with app.app_context(), unit_of_work() as session:
            delete_conversation(session, "racing", None)
        erased.set()

    with app.app_context(), unit_of_work() as session:
        assert lock_lease(session, lease_name("racing", None), "summariser")
        eraser = threading.Thread(target=erase)
        eraser.start()
        assert not erased.wait(1)  # the erasure waits on the locked lease
        record_summary(session, "late-summary", "racing", None, {"content": "late", "compacts_through": 1})
    eraser.join(10)
    assert erased.is_set() and _summaries(app) == []
    with app.app_context(), unit_of_work() as session:
        assert not lock_lease(session, lease_name("racing", None), "summariser")  # gone: nothing stored
