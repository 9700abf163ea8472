"""Times of the console's conversations pages on a big table (issue 25: under 300 ms p95).

    .venv/bin/python bench/console_conversations.py sqlite:////tmp/console.db --generate
    .venv/bin/python bench/console_conversations.py postgresql+psycopg://postgres@127.0.0.1/bench --generate

`--generate` empties the database, migrates it and writes 2,000,000 message rows: 1,000,000
exchanges in 100,000 conversations (20 rows each, their exchanges interleaved in time as
real traffic is) of 1,000 keys, a hundred conversations stored with no key. Then each page
is fetched 15 times through Flask's test client, signed in as an admin made for the run,
and its p50 and p95 printed (the app in-process: no HTTP, no gunicorn). Without
`--generate` it times the database as it is (generated before).
"""

from __future__ import annotations

import argparse
import html
import re
import secrets
import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from console_support import csrf_token  # noqa: E402
from support import run_migrations  # noqa: E402

from app import create_app  # noqa: E402

# Row n belongs to exchange n // 2 (a user turn, then its reply) of conversation
# (n // 2) % 100000: every conversation's exchanges are spread over the whole table.
POSTGRES = (
    """INSERT INTO api_keys (id, name, prefix, key_hash, created_at)
    SELECT g, 'key-' || g, 'gw_' || lpad(g::text, 8, '0'), md5(g::text) || md5((g + 1)::text), now()
    FROM generate_series(1, 1000) g""",
    """INSERT INTO messages (public_id, user_id, exchange_id, api_key_id, timestamp, role, content, status,
     model, prompt_tokens, completion_tokens, total_tokens, cost_micros)
    SELECT md5(n::text), 'conv-' || lpad(to_hex((c * 2654435761) % 4294967296), 8, '0'), 'ex-' || (n / 2),
     CASE WHEN c % 1000 = 999 THEN NULL ELSE c % 1000 + 1 END, timestamp '2026-11-01' + n * interval '1 second',
     CASE WHEN n % 2 = 0 THEN 'user' ELSE 'assistant' END, '"hello there, how are you?"', 'completed',
     CASE WHEN n % 2 = 1 THEN 'gpt-4o-mini' END, CASE WHEN n % 2 = 1 THEN 11 END,
     CASE WHEN n % 2 = 1 THEN 7 END, CASE WHEN n % 2 = 1 THEN 18 END, CASE WHEN n % 2 = 1 THEN 6 END
    FROM (SELECT n, (n / 2) % 100000 AS c FROM generate_series(0, 1999999) n) s ORDER BY n""",
    "SELECT setval('messages_id_seq', 2000001)",
)
SQLITE = (
    """WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 1000)
    INSERT INTO api_keys (id, name, prefix, key_hash, created_at)
    SELECT n, 'key-' || n, printf('gw_%08d', n), printf('%064d', n), '2026-11-01 00:00:00' FROM g""",
    """WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 1999999)
    INSERT INTO messages (public_id, user_id, exchange_id, api_key_id, timestamp, role, content, status,
     model, prompt_tokens, completion_tokens, total_tokens, cost_micros)
    SELECT printf('%032x', n), printf('conv-%08x', (((n / 2) % 100000) * 2654435761) % 4294967296),
     'ex-' || (n / 2), CASE WHEN (n / 2) % 100000 % 1000 = 999 THEN NULL ELSE (n / 2) % 100000 % 1000 + 1 END,
     datetime('2026-11-01', '+' || n || ' seconds'), CASE WHEN n % 2 = 0 THEN 'user' ELSE 'assistant' END,
     '"hello there, how are you?"', 'completed', CASE WHEN n % 2 = 1 THEN 'gpt-4o-mini' END,
     CASE WHEN n % 2 = 1 THEN 11 END, CASE WHEN n % 2 = 1 THEN 7 END, CASE WHEN n % 2 = 1 THEN 18 END,
     CASE WHEN n % 2 = 1 THEN 6 END FROM g""",
)


def generate(url: str) -> None:
    """Empty the database, migrate it, write the rows, and analyse the tables."""
    postgres = url.startswith("postgresql")
    if postgres:
        with sa.create_engine(url).begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    else:
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    run_migrations(url)
    engine = sa.create_engine(url)
    started = time.monotonic()
    with engine.begin() as conn:
        for statement in POSTGRES if postgres else SQLITE:
            conn.execute(sa.text(statement))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE" if postgres else "ANALYZE"))
    print(f"generated in {time.monotonic() - started:.0f} s")


def signed_in_client(url: str):
    """A test client of the app on `url`, signed in as an admin made for this run."""
    settings = {"SQLALCHEMY_DATABASE_URI": url, "CONSOLE_ENABLED": True, "SECRET_KEY": secrets.token_hex(32)}
    app = create_app({"APP_ENV": "testing", "LLM_OFFLINE": True, "RATELIMIT_ENABLED": False, **settings})
    name, password = f"bench-{secrets.token_hex(4)}", secrets.token_hex(16)
    made = app.test_cli_runner().invoke(args=["admins", "create", name, "--password-stdin"], input=password + "\n")
    assert made.exit_code == 0, made.output
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    token = csrf_token(client.get("/console/sign-in").text)
    assert (
        client.post("/console/sign-in", data={"name": name, "password": password, "csrf_token": token}).status_code
        == 302
    )
    return client


def timed(client, label: str, url: str, times: int = 15) -> str:
    """Fetch `url` `times` times; print p50 and p95; the page's HTML."""
    took = []
    for _ in range(times):
        started = time.perf_counter()
        answer = client.get(url)
        took.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (url, answer.status_code)
    took.sort()
    p95 = took[max(0, round(len(took) * 0.95) - 1)]
    print(f"{label:34s} p50 {statistics.median(took):6.1f} ms  p95 {p95:6.1f} ms  {url}")
    return answer.text


def next_page(text: str) -> str:
    return html.unescape(re.search(r'class="next-page" href="([^"]+)"', text).group(1))


def time_pages(client) -> None:
    """Every kind of conversations page, and the second page of the listings."""
    newest = timed(client, "newest, every key", "/console/conversations")
    timed(client, "newest, every key, page 2", next_page(newest))
    of_key = timed(client, "newest, key 7", "/console/conversations?key=7")
    timed(client, "newest, key 7, page 2", next_page(of_key))
    timed(client, "newest, keyless", "/console/conversations?key=")
    found = re.search(r'href="/console/conversation\?key=(\d*)&amp;id=(conv-[0-9a-f]+)"', of_key)
    key, conversation = found.group(1), found.group(2)
    timed(client, "search by id, every key", f"/console/conversations?q={conversation}")
    timed(client, "search by id, key 7", f"/console/conversations?q={conversation}&key=7")
    prefixed = timed(client, "search by prefix, every key", "/console/conversations?q=conv-a&prefix=1")
    timed(client, "search by prefix, page 2", next_page(prefixed))
    timed(client, "search by prefix, key 7", "/console/conversations?q=conv-a&prefix=1&key=7")
    timed(client, "thread", f"/console/conversation?key={key}&id={conversation}")
    timed(client, "thread, last page", f"/console/conversation?key={key}&id={conversation}&end=1")
    timed(client, "erase confirmation", f"/console/conversation/erase?key={key}&id={conversation}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the database: sqlite:///<file> or postgresql+psycopg://...")
    parser.add_argument("--generate", action="store_true", help="empty it and write the big table first")
    args = parser.parse_args()
    if args.generate:
        generate(args.url)
    time_pages(signed_in_client(args.url))


if __name__ == "__main__":
    main()
