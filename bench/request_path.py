"""The project files one request of each chat route runs, and how often each is entered.

    .venv/bin/python bench/request_path.py 2>/dev/null     # add -v for every entry

Builds the app on a fresh SQLite file with keys and rate limits on, answered by the tests'
fake upstream through the real SDK, sends one warm-up and then one traced request per
chat route (plain and streamed), and prints the number of distinct project files whose
code ran and how many times each was entered (from outside any of its own frames).
tests/test_request_path.py holds the three chat-completions routes to 10 files.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_upstream import FakeUpstream  # noqa: E402
from support import app_settings, bearer, create_client_key, migrated_sqlite, trace_request  # noqa: E402

from app import create_app  # noqa: E402

ROUTES = [
    ("/openai-completion", {"prompt": "hi"}),
    ("/process-payload", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/chat/completions", {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses", {"model": "fake-model", "input": "hi"}),
]


def main() -> None:
    upstream = FakeUpstream().start()
    try:
        app = create_app(app_settings(migrated_sqlite("path"), upstream, REQUIRE_API_KEY=True, RATELIMIT_ENABLED=True))
        key = bearer(create_client_key(app))
        client = app.test_client()
        for path, body in ROUTES:
            for stream in (False, True):
                ask = {**body, "stream": stream}
                client.post(path, json=ask, headers=key).get_data()
                _, calls = trace_request(client, path, ask, key)
                entries = [f"{call.called}:{call.function}" for call in calls if call.entered]
                counts = Counter(entry.split(":")[0] for entry in entries)
                print(f"{path} {'streamed' if stream else 'plain'}: {len(counts)} files, {len(entries)} entries")
                print("   ", ", ".join(f"{name} x{count}" for name, count in counts.items()))
                if "-v" in sys.argv:
                    print("\n".join(f"      {entry}" for entry in entries))
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
