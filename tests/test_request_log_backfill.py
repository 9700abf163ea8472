"""Migration 0016 backfills the request log and its rollups from the messages an existing
install holds (set-based, one INSERT ... SELECT each), so its console is not empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask_migrate import upgrade

from app import create_app
from extensions import db


def message(exchange, role, status, at, **columns):
    return {"exchange_id": exchange, "role": role, "status": status, "timestamp": at, "content": '"x"', **columns}


def test_the_migration_backfills_the_log_and_the_rollups_from_messages(empty_database_url):
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database_url, "APP_ENV": "testing", "LLM_OFFLINE": True})
    yesterday = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    rows = [
        message("ex-done", "user", "completed", yesterday, user_id="c1", api_key_id=None),
        message(
            "ex-done", "assistant", "completed", yesterday + timedelta(seconds=2), user_id="c1", model="gpt-4o-mini"
        )
        | {"deployment": "main", "prompt_tokens": 1000, "completion_tokens": 500, "cost_micros": 450},
        message("ex-failed", "user", "failed", yesterday, user_id="c1", model="gpt-4o", error="upstream 500"),
        message("ex-pending", "user", "pending", yesterday, user_id="c2"),
    ]
    try:
        with app.app_context():
            upgrade(revision="0015")
            columns = "exchange_id, role, status, timestamp, content, user_id, api_key_id, model, deployment, "
            columns += "prompt_tokens, completion_tokens, cost_micros, error, public_id"
            names = [name.strip() for name in columns.split(",")]
            insert = f"INSERT INTO messages ({columns}) VALUES ({', '.join(':' + n for n in names)})"
            with db.engine.begin() as conn:
                for number, row in enumerate(rows):
                    conn.execute(sa.text(insert), {**dict.fromkeys(names), **row, "public_id": f"p{number}"})
            upgrade()
            with db.engine.connect() as conn:
                log = conn.execute(sa.text("SELECT * FROM request_log ORDER BY id")).mappings().all()
                rollups = conn.execute(sa.text("SELECT * FROM request_rollups ORDER BY model")).mappings().all()
                by_key = conn.execute(sa.text("SELECT * FROM request_key_rollups")).mappings().all()
            db.engine.dispose()
    finally:
        app.extensions["llm"].close()

    assert [row["exchange_id"] for row in log] == ["ex-failed", "ex-done"]  # oldest first; pending: not yet
    failed, done = log
    assert (failed["model"], failed["status"], failed["error"], failed["cost_micros"]) == (
        "gpt-4o",
        "failed",
        "upstream 500",
        None,
    )
    assert (done["model"], done["answered_model"], done["deployment"], done["cost_micros"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini",
        "main",
        450,
    )
    assert (done["prompt_tokens"], done["completion_tokens"], done["route"], done["latency_ms"]) == (
        1000,
        500,
        None,
        None,
    )
    summed = [
        (str(r["day"]), r["model"], r["route"], r["requests"], r["errors"], r["cost_micros"], r["latency_b0"])
        for r in rollups
    ]
    day = str(yesterday.date())
    assert summed == [(day, "gpt-4o", "", 1, 1, 0, 0), (day, "gpt-4o-mini", "", 1, 0, 450, 0)]
    assert [(str(r["day"]), r["api_key_id"], r["requests"], r["errors"], r["cost_micros"]) for r in by_key] == [
        (day, 0, 2, 1, 450)
    ]
