"""The console bench's database: keys, conversations and exchanges at issue 25's size.

    .venv/bin/python bench/console_data.py sqlite:///bench/results/console.sqlite --exchanges 10000

By default 1,000 keys, 100,000 conversations and 1,000,000 exchanges over 60 days, made
at migration 0015's schema (the tables every console page reads from: api_keys, messages,
upstream_attempts, conversations, api_key_usage, api_key_monthly_spend, audit_log) and then
migrated to head, so that later migrations' backfills (the request log, daily rollups)
fill their own tables from these rows as they would on an operator's database. Loaded in
bulk: SQLite by executemany in large transactions (synchronous=OFF while loading),
PostgreSQL by COPY; the secondary indexes of the two big tables are dropped while loading
and made again afterwards (from their own definitions, so they are exactly the schema's).

The shape is uneven, as real traffic is: conversations fall on keys by a Zipf law (a few
busy keys), exchanges on conversations by a capped Pareto law (a few long threads); most
exchanges complete, some fail (one row, an error, failed attempts) or are cut off by the
client (a partial reply). Costs come from services/prices.yaml's prices; one model is
unpriced (cost NULL). The usage counters are the sums of the exchanges they count.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from console_loaders import loader_for

ROOT = Path(__file__).resolve().parent.parent
SPAN_DAYS = 60
CHUNK = 20_000  # exchanges per batch (and per SQLite transaction)
# (model, USD per million input tokens, per million output tokens, share of exchanges)
MODELS = (
    ("gpt-4o-mini", 0.15, 0.60, 50),
    ("gpt-4o", 2.50, 10.00, 20),
    ("gpt-4.1-mini", 0.40, 1.60, 15),
    ("o4-mini", 1.10, 4.40, 10),
    ("llama-3.3-70b", None, None, 5),  # not in the price table: unpriced
)
STATUSES = (("completed", 955), ("failed", 30), ("disconnected", 15))
ERRORS = (
    ("UpstreamTimeout", None, "The upstream did not answer in time"),
    ("UpstreamUnavailable", 502, "The upstream is unavailable (HTTP 502)"),
    ("UpstreamQuotaExceeded", 429, "The upstream's quota is exhausted (HTTP 429)"),
)
WORDS = (  # noqa: SIM905 (a sentence reads better than a list of words)
    "the request model token budget reply conversation stream upstream latency cost key "
    "please summarise this document and list the main risks with a short explanation for "
    "each one then suggest what we should change in the deployment before next week so "
    "that errors stay rare and users keep their context while the service grows"
).split()
MESSAGE_COLUMNS = (
    "id", "public_id", "user_id", "exchange_id", "api_key_id", "timestamp", "role", "content",
    "status", "error", "completion_id", "model", "deployment", "prompt_tokens",
    "completion_tokens", "total_tokens", "cost_micros",
)  # fmt: skip
ATTEMPT_COLUMNS = (
    "id", "exchange_id", "attempt", "deployment", "model", "outcome", "status_code", "latency_ms",
    "error", "created_at",
)  # fmt: skip


@dataclass(frozen=True)
class Scale:
    """How much to make."""

    keys: int = 1_000
    conversations: int = 100_000
    exchanges: int = 1_000_000


@dataclass
class Picks:
    """Ids the timed pages ask for, chosen from what was generated (saved beside the data)."""

    busy_key: int = 0
    long_conversation_key: int = 0
    long_conversation: str = ""
    long_conversation_exchanges: int = 0
    old_exchange: str = ""
    deep_message_id: int = 0
    model: str = MODELS[0][0]
    generated_seconds: float = 0.0
    scale: dict = field(default_factory=dict)


def stamp(epoch: float) -> str:
    """A UTC instant as both SQLAlchemy's SQLite format and PostgreSQL (session in UTC) read it."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond:06d}"


def text_pool(rng: random.Random, size: int = 400_000) -> str:
    """A long run of words; message contents are slices of it."""
    words, length = [], 0
    while length < size:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def key_rows(scale: Scale, rng: random.Random, start: float) -> list[tuple]:
    """api_keys rows: a hash and a prefix as `flask keys create` stores them (the keys
    themselves are thrown away), some with limits and USD budgets, a few revoked."""
    rows = []
    for key_id in range(1, scale.keys + 1):
        secret = "gw_" + uuid.UUID(int=rng.getrandbits(128)).hex + uuid.UUID(int=rng.getrandbits(128)).hex
        budgeted = rng.random() < 0.3
        rows.append((
            key_id, f"team-{key_id:04d}", secret[:12], hashlib.sha256(secret.encode()).hexdigest(),
            "600 per minute" if rng.random() < 0.2 else None,
            rng.choice((200_000, 1_000_000, 5_000_000)) if rng.random() < 0.3 else None,
            rng.choice((5, 20, 100)) * 1_000_000 if budgeted else None,
            rng.choice((100, 500, 2000)) * 1_000_000 if budgeted else None,
            stamp(start - rng.uniform(0, 30) * 86400),
            stamp(start + rng.uniform(0, SPAN_DAYS) * 86400) if rng.random() < 0.05 else None,
        ))  # fmt: skip
    return rows


KEY_COLUMNS = (
    "id", "name", "prefix", "key_hash", "rate_limit", "daily_tokens", "daily_usd_micros",
    "monthly_usd_micros", "created_at", "revoked_at",
)  # fmt: skip


@dataclass
class Conversations:
    """Who the conversations are: ids, their keys, and how much each talks (cumulative)."""

    ids: list[str]
    keys: list[int]
    cumulative: list[float]

    @classmethod
    def drawn(cls, scale: Scale, rng: random.Random) -> Conversations:
        """Keys by Zipf (rank^-0.9), exchanges per conversation by Pareto(1.3) capped at
        400x the least: a few busy keys and long threads, a long tail of short ones."""
        key_weights = [1 / rank**0.9 for rank in range(1, scale.keys + 1)]
        keys = rng.choices(range(1, scale.keys + 1), weights=key_weights, k=scale.conversations)
        ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(scale.conversations)]
        total, cumulative = 0.0, []
        for _ in range(scale.conversations):
            total += min(rng.paretovariate(1.3), 400.0)
            cumulative.append(total)
        return cls(ids, keys, cumulative)


@dataclass
class Tally:
    """What the exchanges add up to: the usage counters, and the picks' raw material."""

    days: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))
    months: dict = field(default_factory=lambda: defaultdict(int))
    per_conversation: Counter = field(default_factory=Counter)
    per_key: Counter = field(default_factory=Counter)

    def charge(self, key_id: int, day: str, prompt: int, completion: int, cost: int | None) -> None:
        """One settled reply: one request, its tokens and its cost on its key's day and month."""
        counters = self.days[key_id, day]
        counters[0] += 1
        counters[1] += prompt
        counters[2] += completion
        counters[3] += cost or 0
        self.months[key_id, day[:8] + "01"] += cost or 0

    def usage_rows(self) -> list[tuple]:
        """api_key_usage rows (nothing reserved: no request is in progress)."""
        return [
            (key_id, day, n, prompt, completion, prompt + completion, 0, cost, 0)
            for (key_id, day), (n, prompt, completion, cost) in sorted(self.days.items())
        ]

    def monthly_rows(self) -> list[tuple]:
        """api_key_monthly_spend rows."""
        return [(key_id, month, cost, 0) for (key_id, month), cost in sorted(self.months.items())]


USAGE_COLUMNS = (
    "api_key_id", "day", "requests", "prompt_tokens", "completion_tokens", "total_tokens",
    "reserved_tokens", "cost_micros", "reserved_micros",
)  # fmt: skip
MONTHLY_COLUMNS = ("api_key_id", "month", "cost_micros", "reserved_micros")


class Exchanges:
    """Makes exchanges in time order: their message rows and upstream attempts."""

    def __init__(self, scale: Scale, rng: random.Random, start: float, conversations: Conversations) -> None:
        self.rng, self.conversations, self.tally = rng, conversations, Tally()
        self.text = text_pool(rng)
        self.start, self.gap, self.count = start, SPAN_DAYS * 86400 / scale.exchanges, 0
        self.clock = start
        self.message_id = self.attempt_id = 0
        self.statuses = [name for name, weight in STATUSES for _ in range(weight)]
        self.models = [model for model in MODELS for _ in range(model[3])]

    def content(self, median: int) -> str:
        """A JSON string of about `median` characters (log-normal), as the content column holds it."""
        size = min(int(self.rng.lognormvariate(math.log(median), 0.8)) + 1, 20_000)
        start = self.rng.randrange(len(self.text) - size) if size < len(self.text) else 0
        return json.dumps(self.text[start : start + size])

    def batch(self, count: int) -> tuple[list[tuple], list[tuple]]:
        """The next `count` exchanges: their message rows and their attempt rows."""
        messages: list[tuple] = []
        attempts: list[tuple] = []
        everyone = range(len(self.conversations.ids))
        chosen = self.rng.choices(everyone, cum_weights=self.conversations.cumulative, k=count)
        for conversation in chosen:
            # One exchange per slot of the 60 days, at a random instant in it: in time order.
            self.clock = self.start + (self.count + self.rng.random()) * self.gap
            self.count += 1
            self.exchange(conversation, messages, attempts)
        return messages, attempts

    def exchange(self, conversation: int, messages: list[tuple], attempts: list[tuple]) -> None:
        """One exchange: the user's row, the reply's unless it failed, and its attempts."""
        rng, at = self.rng, stamp(self.clock)
        exchange_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        user_id, key_id = self.conversations.ids[conversation], self.conversations.keys[conversation]
        status, (model, price_in, price_out, _) = rng.choice(self.statuses), rng.choice(self.models)
        self.tally.per_conversation[conversation] += 1
        self.tally.per_key[key_id] += 1
        failed = status == "failed"
        error = rng.choice(ERRORS) if failed else None
        self.message_id += 1
        messages.append((
            self.message_id, f"{rng.getrandbits(128):032x}", user_id, exchange_id, key_id, at, "user",
            self.content(300), status, error[2] if failed else None, None, model if failed else None,
            None, None, None, None, None,
        ))  # fmt: skip
        if not failed:
            self.reply(messages, exchange_id, user_id, key_id, status, model, price_in, price_out)
        self.attempts(attempts, exchange_id, model, error)

    def reply(self, messages, exchange_id, user_id, key_id, status, model, price_in, price_out) -> None:
        """The assistant's row (partial when the client disconnected), charged to its key."""
        rng = self.rng
        answered = stamp(self.clock + rng.uniform(0.3, 8.0))
        prompt = int(rng.lognormvariate(math.log(900), 0.9)) + 10
        completion = int(rng.lognormvariate(math.log(350), 0.8)) + 1
        if status == "disconnected":
            completion = max(1, completion // 3)
        cost = None if price_in is None else round(prompt * price_in + completion * price_out)
        self.message_id += 1
        messages.append((
            self.message_id, f"{rng.getrandbits(128):032x}", user_id, exchange_id, key_id, answered,
            "assistant", self.content(1200 if status == "completed" else 300), status, None,
            f"chatcmpl-{rng.getrandbits(96):024x}", model, "openai", prompt, completion, prompt + completion, cost,
        ))  # fmt: skip
        self.tally.charge(key_id, answered[:10], prompt, completion, cost)

    def attempts(self, rows: list[tuple], exchange_id: str, model: str, error: tuple | None) -> None:
        """The router's calls: one "ok" (after a failed one on 3% of them), or 1-2 failures."""
        rng, at = self.rng, stamp(self.clock)
        failures = [rng.choice(ERRORS)] if error is None and rng.random() < 0.03 else []
        if error is not None:
            failures = [error] + ([rng.choice(ERRORS)] if rng.random() < 0.5 else [])
        for number, (outcome, code, text) in enumerate(failures, 1):
            self.attempt_id += 1
            latency = 30_000 if outcome == "UpstreamTimeout" else rng.randint(20, 400)
            rows.append((self.attempt_id, exchange_id, number, "azure-east", model, outcome, code, latency, text, at))
        if error is None:
            self.attempt_id += 1
            latency, number = int(rng.lognormvariate(math.log(900), 0.6)), len(failures) + 1
            rows.append((self.attempt_id, exchange_id, number, "openai", model, "ok", 200, latency, None, at))


def conversation_records(conversations: Conversations, rng: random.Random, start: float) -> list[tuple]:
    """`conversations` rows (metadata) for one conversation in ten, as the Conversations API makes."""
    rows = []
    for index, (user_id, key_id) in enumerate(zip(conversations.ids, conversations.keys, strict=True)):
        if index % 10 == 0:
            metadata = json.dumps({"topic": rng.choice(WORDS), "team": f"team-{key_id:04d}"})
            rows.append((key_id, user_id, metadata, stamp(start + rng.uniform(0, SPAN_DAYS) * 86400)))
    return rows


def audit_rows(scale: Scale, rng: random.Random, start: float, count: int = 5_000) -> list[tuple]:
    """audit_log rows: sign-ins and key changes by a few operators, in time order."""
    actions = ("console.sign_in", "key.create", "key.limits", "key.revoke", "console.sign_out")
    rows = []
    for index in range(count):
        at = start + SPAN_DAYS * 86400 * index / count
        action = rng.choice(actions)
        target = None if action.startswith("console.") else f"gw_{rng.getrandbits(36):09x}"
        name = f"team-{rng.randint(1, scale.keys):04d}"
        detail = json.dumps({"address": "10.0.0.7"} if target is None else {"name": name})
        rows.append((stamp(at), rng.choice(("ops", "alice", "bob")), action, target, detail))
    return rows


def migrate(database_url: str, revision: str = "heads") -> None:
    """`flask db upgrade <revision>` against the database, as an operator runs it."""
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "APP_ENV": "development"}
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "flask"), "--app", "app", "db", "upgrade", revision],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"flask db upgrade {revision} failed:\n{done.stderr[-3000:]}")


def load(loader, scale: Scale, seed: int) -> Picks:
    """Fill the 0015-schema tables; the picks for the timed pages."""
    rng, start = random.Random(seed), time.time() - SPAN_DAYS * 86400 - 60
    loader.rows("api_keys", KEY_COLUMNS, key_rows(scale, rng, start))
    conversations = Conversations.drawn(scale, rng)
    loader.rows("conversations", ("api_key_id", "user_id", "metadata", "created_at"),
                conversation_records(conversations, rng, start))  # fmt: skip
    exchanges, old_exchange = Exchanges(scale, rng, start, conversations), ""
    with loader.without_indexes("messages", "upstream_attempts"):
        for done in range(0, scale.exchanges, CHUNK):
            messages, attempts = exchanges.batch(min(CHUNK, scale.exchanges - done))
            old_exchange = old_exchange or messages[min(len(messages) - 1, 1000)][3]
            loader.rows("messages", MESSAGE_COLUMNS, messages)
            loader.rows("upstream_attempts", ATTEMPT_COLUMNS, attempts)
            loader.commit()
            print(f"  {exchanges.count:,} exchanges", end="\r", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    loader.rows("api_key_usage", USAGE_COLUMNS, exchanges.tally.usage_rows())
    loader.rows("api_key_monthly_spend", MONTHLY_COLUMNS, exchanges.tally.monthly_rows())
    loader.rows("audit_log", ("at", "actor", "action", "target", "detail"), audit_rows(scale, rng, start))
    longest, length = exchanges.tally.per_conversation.most_common(1)[0]
    return Picks(
        busy_key=exchanges.tally.per_key.most_common(1)[0][0],
        long_conversation_key=conversations.keys[longest],
        long_conversation=conversations.ids[longest],
        long_conversation_exchanges=length,
        old_exchange=old_exchange,
        deep_message_id=exchanges.message_id // 10,
        scale=asdict(scale),
    )


def generate(database_url: str, scale: Scale, seed: int = 25) -> Picks:
    """A fresh database at `database_url` (dropped and made again), loaded and migrated to head."""
    began = time.monotonic()
    loader = loader_for(database_url)
    loader.recreate()
    migrate(database_url, "0015")
    with loader.connected():
        picks = load(loader, scale, seed)
        loader.finish()
    migrate(database_url)
    picks.generated_seconds = round(time.monotonic() - began, 1)
    return picks


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", help="sqlite:///path or postgresql+psycopg://user@host/name")
    parser.add_argument("--keys", type=int, default=Scale.keys)
    parser.add_argument("--conversations", type=int, default=Scale.conversations)
    parser.add_argument("--exchanges", type=int, default=Scale.exchanges)
    args = parser.parse_args()
    picks = generate(args.database_url, Scale(args.keys, args.conversations, args.exchanges))
    print(json.dumps(asdict(picks), indent=2))


if __name__ == "__main__":
    main()
