"""What `make run` does, for real: `flask db upgrade`, then gunicorn with gunicorn.conf.py."""

from __future__ import annotations

import re

import requests
from support import UPSTREAM_KEY, Served, service_env

FROZEN = re.compile(r"(\d+) objects of the built app frozen")  # gunicorn.conf.py's post_worker_init


def test_gunicorn_serves_both_routes_through_an_openai_compatible_upstream(tmp_path, upstream):
    env = service_env(
        tmp_path, OPENAI_API_KEY=UPSTREAM_KEY, OPENAI_BASE_URL=upstream.base_url, OPENAI_MODEL="fake-model"
    )
    served = Served(env, migrate_by_cli=True)
    try:
        served.wait_for("LLM upstream: OpenAI at", count=2)
        first = requests.post(f"{served.url}/openai-completion", json={"prompt": "via gunicorn"}, timeout=30)
        user_id = first.json()["user_id"]
        second = requests.post(
            f"{served.url}/process-payload/",
            json={"user_id": user_id, "messages": [{"role": "user", "content": "and again"}]},
            timeout=30,
        )
    finally:
        log = served.stop()

    assert first.status_code == 200, log
    assert first.json()["completion"] == "echo: via gunicorn"
    assert second.status_code == 200
    assert second.json()["content"] == "echo: and again"
    assert upstream.chat_requests()[-1]["messages"] == [
        {"role": "user", "content": "via gunicorn"},
        {"role": "assistant", "content": "echo: via gunicorn"},
        {"role": "user", "content": "and again"},
    ]
    assert UPSTREAM_KEY not in log


def test_gunicorn_without_a_key_serves_the_offline_model(tmp_path):
    served = Served(service_env(tmp_path), migrate_by_cli=True)
    try:
        served.wait_for("built-in offline model", count=2)
        served.wait_for("objects of the built app frozen")
        response = requests.post(f"{served.url}/openai-completion", json={"prompt": "anyone home?"}, timeout=30)
    finally:
        served.stop()

    # The worker froze the built app (gunicorn.conf.py's post_worker_init) before serving:
    # its modules, models and schemas, tens of thousands of objects, not a near-empty heap.
    frozen = [int(found.group(1)) for line in served.output if (found := FROZEN.search(line))]
    assert frozen[0] > 50_000
    assert response.status_code == 200
    assert response.json()["model"] == "offline"
    assert response.json()["completion"].startswith("[offline model] You said: 'anyone home?'")
