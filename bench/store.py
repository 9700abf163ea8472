"""CPU of the conversation store's per-request work, in-process, on a fresh SQLite file.

    .venv/bin/python bench/store.py 2>/dev/null            # 2,000 of each, three rounds
    .venv/bin/python bench/store.py --requests 5000 --exchanges 20

What every chat request costs the database layer, apart from HTTP and the upstream: the
two units of work of an exchange (unit 1 records the turn `pending`, unit 2 closes it and
records the reply, each its own transaction through `database.unit_of_work` and the
SQLite writer queue, as the pipeline runs them), and reading a conversation's history
(`--exchanges` completed exchanges, through the same function the pipeline calls). Beside
them, the same statements sent by the bare `sqlite3` module: the floor no code of ours can
go under. Prints one JSON line per figure and round (bench/cpu.py's: CPU per operation).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cpu import measure  # noqa: E402

TURN = [{"role": "user", "content": "Say something short."}]
REPLY = {"role": "assistant", "content": "Hi there", "model": "m", "prompt_tokens": 5, "completion_tokens": 3}


def measure_rounds(label: str, operation: Callable[[], object], count: int, rounds: int) -> None:
    """bench/cpu.py's measure, `rounds` times: one JSON line each."""
    for attempt in range(rounds):
        measure(f"{label} (round {attempt + 1})", operation, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--exchanges", type=int, default=10, help="completed exchanges in the history read")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        from run import in_process_app

        app = in_process_app(tmp)
        from database import unit_of_work
        from services.exchanges import record_reply, record_turn
        from services.history import UNLIMITED, rebuild_history

        def exchange(conversation_id: str | None = None) -> None:
            exchange_id, conversation_id = str(uuid.uuid4()), conversation_id or str(uuid.uuid4())
            with unit_of_work() as session:
                record_turn(session, exchange_id, conversation_id, None, TURN)
            with unit_of_work() as session:
                record_reply(session, exchange_id, conversation_id, None, {**REPLY, "total_tokens": 8})

        def history() -> None:
            with unit_of_work(write=False) as session:
                found = rebuild_history(session, "bench-conversation", None, UNLIMITED)
            assert len(found.messages) == 2 * args.exchanges, found

        with app.app_context():
            for _ in range(args.exchanges):
                exchange("bench-conversation")
            measure_rounds("two units of work: a turn recorded, then its reply", exchange, args.requests, args.rounds)
            measure_rounds(f"history read, {args.exchanges} exchanges", history, args.requests, args.rounds)

        connection = sqlite3.connect(f"{tmp}/app.db", isolation_level=None)

        def bare() -> None:
            exchange_id, conversation_id, now = str(uuid.uuid4()), str(uuid.uuid4()), datetime.now(UTC).isoformat()
            columns = "user_id, exchange_id, role, content, status, timestamp"
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                f"INSERT INTO messages ({columns}) VALUES (?, ?, 'user', ?, 'pending', ?)",
                (conversation_id, exchange_id, TURN[0]["content"], now),
            )
            connection.execute("COMMIT")
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "UPDATE messages SET status = 'completed', error = NULL WHERE exchange_id = ? AND status = 'pending'",
                (exchange_id,),
            )
            connection.execute(
                f"INSERT INTO messages ({columns}, model, prompt_tokens, completion_tokens, total_tokens)"
                " VALUES (?, ?, 'assistant', ?, 'completed', ?, 'm', 5, 3, 8)",
                (conversation_id, exchange_id, REPLY["content"], now),
            )
            connection.execute("COMMIT")

        measure_rounds("the same statements through bare sqlite3", bare, args.requests, args.rounds)


if __name__ == "__main__":
    main()
