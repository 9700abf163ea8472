"""Times every console page on issue 25's big database: each under 300 ms (p95)?

    make bench-console                      # both databases, made afresh (about 20 minutes here)
    .venv/bin/python bench/console.py --reuse                  # the databases made last time
    .venv/bin/python bench/console.py --reuse --databases sqlite --requests 20

For each database (SQLite: bench/results/console.sqlite, or BENCH_CONSOLE_SQLITE_URL;
PostgreSQL: `bench_console`, or BENCH_CONSOLE_POSTGRES_URL), bench/console_data.py makes 1,000 keys,
100,000 conversations and 1,000,000 exchanges at migration 0015's schema and migrates it
to head (with --reuse, the database made last time is kept and only migrated to head, so
migrations merged since then run their backfills on it). Then the service starts as
`make run` starts it (gunicorn, gevent, one worker) with the console on, an admin made by
`flask admins create`, signs in through the form (CSRF token and all), and requests each
page of PAGES `--warmup` times, then `--requests` times one after another, timing each
answer whole (body read). Prints p50 / p95 / max per page and database, and a Markdown
table for bench/README.md. A page answering 404 is skipped with a note (not built yet on
this branch); any other answer but 200 stops the bench with an error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from console_data import Picks, Scale, generate, migrate  # noqa: E402
from run import RESULTS, VENV, Process, pinned, wait_http  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 300
DATABASES = {
    "sqlite": os.environ.get("BENCH_CONSOLE_SQLITE_URL", f"sqlite:///{RESULTS / 'console.sqlite'}"),
    "postgresql": os.environ.get(
        "BENCH_CONSOLE_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/bench_console"
    ),
}
# Every page the bench times: (name, path). Placeholders are filled from the generated
# data (console_data.Picks; plus `week_ago`, and `busy_key_prefix` and
# `long_conversation_key_prefix` for pages that name a key by its prefix): add a page here
# when it is built.
PAGES = (
    ("Overview", "/console/overview"),
    ("Keys", "/console/keys"),
    ("Keys, the last page (keyset)", "/console/keys?after=900"),
    ("Audit", "/console/audit"),
    ("Audit, an old page (keyset)", "/console/audit?before=100"),
    ("Requests", "/console/requests"),
    ("Requests of the busiest key", "/console/requests?key={busy_key}"),
    ("Requests, filtered", "/console/requests?key={busy_key}&model={model}&status=failed&since={week_ago}"),
    ("Requests, a deep keyset page", "/console/requests?before={deep_message_id}"),
    ("Request detail, an old exchange", "/console/requests/{old_exchange}"),
    ("Conversations, the newest of every key", "/console/conversations"),
    ("Conversations of the busiest key", "/console/conversations?key={busy_key}"),
    ("Conversations, search by prefix", "/console/conversations?q={long_conversation:.6}&prefix=1"),
    ("Conversations, search by id", "/console/conversations?key={long_conversation_key}&q={long_conversation}"),
    ("The longest conversation", "/console/conversation?key={long_conversation_key}&id={long_conversation}"),
    ("Erase confirmation", "/console/conversation/erase?key={long_conversation_key}&id={long_conversation}"),
    ("Upstreams", "/console/upstreams"),
    ("Settings", "/console/settings"),
)
ADMIN = "bench"


def log(message: str) -> None:
    print(f"[console {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def prepared(name: str, url: str, scale: Scale, reuse: bool) -> Picks:
    """The database made (or, with `reuse`, the one made last time, migrated to head)."""
    saved = RESULTS / f"{Path(make_url(url).database).stem}-{name}.picks.json"
    if reuse and saved.exists():
        picks = Picks(**json.loads(saved.read_text()))
        if picks.scale == asdict(scale):
            log(f"{name}: reusing the database made last time; migrating it to head")
            began = time.monotonic()
            migrate(url)
            log(f"{name}: migrated in {time.monotonic() - began:.0f} s")
            return picks
        log(f"{name}: the database made last time has another scale ({picks.scale}): making it again")
    log(f"{name}: generating {scale.exchanges:,} exchanges ...")
    picks = generate(url, scale)
    saved.write_text(json.dumps(asdict(picks), indent=2))
    log(f"{name}: generated in {picks.generated_seconds:.0f} s")
    return picks


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV / "flask"), "--app", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def service_env(url: str, workdir: Path, port: int) -> dict[str, str]:
    """`make run`'s environment with the console on, over plain HTTP on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "DATABASE_", "OPENAI_"))}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        DATABASE_URL=url,
        OPENAI_API_KEY="bench-not-a-real-key",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",  # never called
        CONSOLE_ENABLED="true",
        CONSOLE_COOKIE_SECURE="false",
        SECRET_KEY=os.urandom(32).hex(),
        WEB_CONCURRENCY="1",
        RATELIMIT_ENABLED="false",
        SWEEP_INTERVAL_SECONDS="0",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "metrics"),
        JOURNAL_PATH=str(workdir / "exchanges.journal"),
    )
    (workdir / "metrics").mkdir(exist_ok=True)
    return env


def admin_password(env: dict[str, str]) -> str:
    """A fresh admin from `flask admins create` (the one of a previous run deleted first)."""
    flask(env, "admins", "delete", ADMIN)
    made = flask(env, "admins", "create", ADMIN)
    if made.returncode != 0:
        sys.exit(f"flask admins create failed:\n{made.stderr}")
    return made.stdout.strip()


def signed_in(base: str, password: str) -> requests.Session:
    """A session signed in through the form, as a browser would (its CSRF token included)."""
    browser = requests.Session()
    form = browser.get(f"{base}/console/sign-in", timeout=30)
    match = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', form.text)
    if not match:
        sys.exit("no CSRF token in the sign-in page")
    fields = {"csrf_token": match.group(1), "name": ADMIN, "password": password}
    answer = browser.post(f"{base}/console/sign-in", data=fields, allow_redirects=False, timeout=30)
    if answer.status_code != 302 or "sign-in" in answer.headers.get("Location", ""):
        sys.exit(f"signing in failed: HTTP {answer.status_code}")
    return browser


def timed(browser: requests.Session, url: str, times: int) -> list[float] | int:
    """Milliseconds of each of `times` GETs (whole body read), or the first status not 200."""
    spent = []
    for _ in range(times):
        began = time.perf_counter()
        answer = browser.get(url, allow_redirects=False, timeout=120)
        spent.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            return answer.status_code
    return spent


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))]


def pages(wanted: str) -> list[tuple[str, str]]:
    """PAGES, or those whose name or path contains one of the comma-separated `wanted`."""
    words = [word.strip().lower() for word in wanted.split(",") if word.strip()]
    return [page for page in PAGES if not words or any(w in (page[0] + page[1]).lower() for w in words)]


def placeholders(url: str, picks: Picks) -> dict:
    """What PAGES' paths may name: the picks, the prefixes of their keys, a week ago."""
    engine = create_engine(url)
    with engine.connect() as connection:
        prefixes = dict(connection.execute(text("SELECT id, prefix FROM api_keys")).all())
    engine.dispose()
    values = {**asdict(picks), "week_ago": time.strftime("%Y-%m-%d", time.gmtime(time.time() - 7 * 86400))}
    values.update(busy_key_prefix=prefixes[picks.busy_key])
    values.update(long_conversation_key_prefix=prefixes[picks.long_conversation_key])
    return values


def time_pages(base: str, browser: requests.Session, values: dict, args) -> list[dict]:
    """Each page of PAGES: warmed up, then timed; 404s noted as skipped; others fatal."""
    results = []
    for name, template in pages(args.pages):
        path = template.format(**values)
        warm = timed(browser, base + path, args.warmup)
        measured = warm if isinstance(warm, int) else timed(browser, base + path, args.requests)
        if measured == 404:
            log(f"  {name}: 404, not on this code: skipped")
            results.append({"page": name, "path": template, "skipped": "404 (not built on this code)"})
            continue
        if isinstance(measured, int):
            sys.exit(f"FAILED: {name} ({path}) answered HTTP {measured}, not 200")
        row = {"page": name, "path": template, "p50": statistics.median(measured)}
        row.update(p95=percentile(measured, 0.95), max=max(measured), n=len(measured))
        log(f"  {name}: p50 {row['p50']:.0f} ms, p95 {row['p95']:.0f} ms, max {row['max']:.0f} ms")
        results.append(row)
    return results


def bench_database(name: str, url: str, args) -> list[dict]:
    """Prepare the database, serve it, sign in, time the pages."""
    picks = prepared(name, url, Scale(args.keys, args.conversations, args.exchanges), args.reuse)
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp, ExitStack() as stack:
        env = service_env(url, Path(tmp), args.port)
        password = admin_password(env)
        command = [str(VENV / "gunicorn"), "--config", "gunicorn.conf.py", "app:create_app()"]
        server = Process(f"console-{name}", pinned(args.cpus, command) if args.cpus else command, env)
        stack.callback(server.stop)
        base = f"http://127.0.0.1:{args.port}"
        wait_http(f"{base}/healthz")
        count = len(pages(args.pages))
        log(f"{name}: timing {count} pages, {args.requests} requests each after {args.warmup} to warm up")
        return time_pages(base, signed_in(base, password), placeholders(url, picks), args)


def markdown(results: dict[str, list[dict]], wanted: str) -> str:
    """One table: a row per page, p50 / p95 / max per database, met or not."""
    names = list(results)
    lines = ["| page | " + " | ".join(f"{n} p50 / p95 / max (ms)" for n in names) + " | p95 < 300 ms? |"]
    lines.append("| --- " * (len(names) + 2) + "|")
    for index, (page, path) in enumerate(pages(wanted)):
        rows = [results[n][index] for n in names]
        cells = [r["skipped"] if "skipped" in r else f"{r['p50']:.0f} / {r['p95']:.0f} / {r['max']:.0f}" for r in rows]
        timed_rows = [r for r in rows if "p95" in r]
        met = "" if not timed_rows else ("yes" if all(r["p95"] < TARGET_MS for r in timed_rows) else "**no**")
        lines.append(f"| {page} `{path}` | " + " | ".join(cells) + f" | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--reuse", action="store_true", help="keep the databases made last time (same scale)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pages", default="", help="only pages whose name or path has one of these words (a,b)")
    parser.add_argument("--keys", type=int, default=Scale.keys)
    parser.add_argument("--conversations", type=int, default=Scale.conversations)
    parser.add_argument("--exchanges", type=int, default=Scale.exchanges)
    parser.add_argument("--port", type=int, default=9250)
    parser.add_argument("--cpus", default="", help="pin the server to these CPUs (taskset), e.g. 0")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    results = {name: bench_database(name, DATABASES[name], args) for name in args.databases.split(",")}
    table = markdown(results, args.pages)
    (RESULTS / "console.md").write_text(table + "\n")
    (RESULTS / "console.json").write_text(json.dumps(results, indent=2))
    print(table)
    slow = [r["page"] for rows in results.values() for r in rows if r.get("p95", 0) >= TARGET_MS]
    if slow:
        print(f"\nOver {TARGET_MS} ms p95: {', '.join(sorted(set(slow)))}")


if __name__ == "__main__":
    main()
