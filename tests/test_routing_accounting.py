"""Issue 21, accounting (behaviours 11 and 12): what a routed answer names, what is recorded
of every attempt (the `upstream_attempts` table), what a key's budget is charged, and what
a failed request logs and records. Real local upstreams (tests/fault_upstream.py).
"""

from __future__ import annotations

import logging

import openai
import pytest
import sqlalchemy as sa
from fake_upstream import Reply
from fault_upstream import FaultStream, overloaded
from support import all_rows, deployment, routing_key, rows_of

from extensions import db

QUICK = {"backoff_seconds": 0.05, "deadline_seconds": 30, "retries_per_deployment": 0}
SHORT = {"connect": 2, "first_token": 2, "silence": 1, "total": 20}
PIECES = ["Every ", "word ", "counted ", "once."]
KEYED = {"REQUIRE_API_KEY": True}


def _group(*deployments) -> dict:
    return {"fake-model": {"deployments": list(deployments)}}


def _attempts(app, exchange_id: str) -> list[dict]:
    """The exchange's rows of the attempts table, in attempt order."""
    query = sa.text(
        "SELECT attempt, deployment, model, outcome, status_code, latency_ms, error FROM upstream_attempts "
        "WHERE exchange_id = :exchange ORDER BY attempt"
    )
    with app.app_context(), db.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query, {"exchange": exchange_id})]


def _usage(app) -> dict[str, int]:
    (row,) = all_rows(app)["api_key_usage"]
    return dict(zip(("requests", "prompt", "completion", "total", "reserved"), row[2:7], strict=True))


def _metered_key(app) -> str:
    result = app.test_cli_runner().invoke(args=["keys", "create", "--name", "metered", "--daily-tokens", "5000"])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def _sdk(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=30)


def test_a_failed_over_answer_names_the_answering_model_records_every_attempt_and_charges_once(routed, fault_upstreams):
    """Behaviour 11: the primary answers 503, the backup answers: the client's `model` and
    usage are the backup's; the reply row says the same; the attempts table holds both
    attempts in order (the failure's status, a latency, an error without the key; the
    answer "ok"); the key's budget is charged once, the backup's tokens only."""
    primary_server, backup_server = fault_upstreams(2)
    primary_server.default = overloaded()
    backup_server.default = Reply(text="answered by the backup", prompt_tokens=13, completion_tokens=5)
    primary = deployment(primary_server, "primary", priority=1, model="primary-model")
    backup = deployment(backup_server, "backup", priority=2, model="backup-model")
    app, server = routed(_group(primary, backup), QUICK, **KEYED)
    key = _metered_key(app)

    with _sdk(server, key) as client:
        answer = client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "who answers?"}],
            max_tokens=20,
            extra_headers={"X-Conversation-Id": "acct-failover"},
        )

    assert (answer.choices[0].message.content, answer.model) == ("answered by the backup", "backup-model")
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (13, 5, 18)
    user, reply = rows_of(app, "acct-failover")
    assert (reply["model"], reply["prompt_tokens"], reply["completion_tokens"], reply["status"]) == (
        "backup-model",
        13,
        5,
        "completed",
    )
    failed, answered = _attempts(app, reply["exchange_id"])
    assert (failed["attempt"], failed["deployment"], failed["model"], failed["status_code"]) == (
        1,
        primary.name,
        "primary-model",
        503,
    )
    assert failed["outcome"] not in ("ok", "cut") and failed["error"] and failed["latency_ms"] >= 0
    assert routing_key(primary_server) not in failed["error"]
    assert (answered["attempt"], answered["deployment"], answered["model"], answered["outcome"]) == (
        2,
        backup.name,
        "backup-model",
        "ok",
    )
    assert _usage(app) == {"requests": 1, "prompt": 13, "completion": 5, "total": 18, "reserved": 0}


def test_a_continued_stream_is_one_reply_recorded_whole_with_both_attempts(routed, fault_upstreams):
    """Behaviour 11: a stream cut after "Every word " on the primary and continued on a
    prefill deployment is one reply: one assistant row with the whole text, completed; the
    attempts table holds the cut attempt then the answering one; the budget is charged
    once, as much as the reply row says."""
    primary_server, continuer_server = fault_upstreams(1) + fault_upstreams(1, prefill=True)
    primary_server.default = FaultStream(PIECES, cut_after=2)
    continuer_server.default = FaultStream(PIECES, prompt_tokens=20, completion_tokens=6)
    primary = deployment(primary_server, "primary", priority=1, timeouts=SHORT)
    continuer = deployment(continuer_server, "continuer", priority=2, capabilities={"prefill": True})
    app, server = routed(_group(primary, continuer), QUICK, **KEYED)
    key = _metered_key(app)

    with _sdk(server, key) as client:
        chunks = list(
            client.chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": "count"}],
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"X-Conversation-Id": "acct-continued"},
            )
        )

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(PIECES)
    rows = rows_of(app, "acct-continued")
    assert [(r["role"], r["status"]) for r in rows] == [("user", "completed"), ("assistant", "completed")]
    assert rows[1]["content"] == "".join(PIECES)
    attempts = _attempts(app, rows[1]["exchange_id"])
    assert [(a["attempt"], a["deployment"], a["outcome"]) for a in attempts] == [
        (1, primary.name, "cut"),
        (2, continuer.name, "ok"),
    ]
    usage = _usage(app)
    assert (usage["requests"], usage["reserved"]) == (1, 0)
    assert usage["total"] == usage["prompt"] + usage["completion"] == rows[1]["total_tokens"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_failed_exchange_records_every_attempt_names_the_model_asked_for_and_charges_nothing(
    routed, fault_upstreams, stream
):
    """Behaviours 11 and 12: every deployment answers 503: the exchange is recorded failed,
    its rows naming the model the client asked for, its log line too; the attempts table
    holds each failed attempt (deployment, its model, status 503); nothing is billed and
    the reservation is given back."""
    first_server, second_server = fault_upstreams(2)
    first_server.default = second_server.default = overloaded()
    first = deployment(first_server, "first", priority=1, model="first-model")
    second = deployment(second_server, "second", priority=2, model="second-model")
    app, server = routed(_group(first, second), QUICK, **KEYED)
    key = _metered_key(app)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("gateway.request").addHandler(handler)
    try:
        with _sdk(server, key) as client, pytest.raises(openai.APIStatusError) as caught:
            answer = client.chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": "anyone?"}],
                stream=stream,
                extra_headers={"X-Conversation-Id": "acct-failed", "X-Request-ID": f"acct-failed-{stream}"},
            )
            list(answer) if stream else None
        server.wait_idle()
    finally:
        logging.getLogger("gateway.request").removeHandler(handler)

    assert caught.value.status_code == 503  # the upstreams' own failure, none of ours
    (user,) = rows_of(app, "acct-failed")
    assert (user["status"], user["model"]) == ("failed", "fake-model")
    attempts = _attempts(app, user["exchange_id"])
    assert [(a["deployment"], a["model"], a["status_code"]) for a in attempts] == [
        (first.name, "first-model", 503),
        (second.name, "second-model", 503),
    ]
    assert all(a["outcome"] not in ("ok", "cut") for a in attempts)
    assert _usage(app) == {"requests": 0, "prompt": 0, "completion": 0, "total": 0, "reserved": 0}
    [line] = [r.fields for r in records if r.fields.get("request_id") == f"acct-failed-{stream}"]
    assert line["model"] == "fake-model"
