"""No key ever leaves: run real traffic through gunicorn with a real-looking upstream key and
client keys, then search every response, every log line and every byte of the database.

Keys are drawn at run time, so nothing key-shaped sits in the repository.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import requests
from cryptography.fernet import Fernet
from fake_upstream import Status, StreamReply
from support import Served, free_port, run_flask, service_env

from services.client_keys import KEY_PREFIX


def test_no_key_appears_in_any_response_log_line_or_database_byte(tmp_path, upstream):
    upstream_key = "sk-proj-" + secrets.token_urlsafe(48)
    compaction_key = Fernet.generate_key().decode()  # production needs one
    database = tmp_path / "served.db"
    env = service_env(
        tmp_path,
        APP_ENV="production",  # keys required by default
        OPENAI_API_KEY=upstream_key,
        COMPACTION_KEY=compaction_key,
        OPENAI_BASE_URL=upstream.base_url,
        OPENAI_MODEL="fake-model",
        OPENAI_MAX_RETRIES="0",
        LOG_LEVEL="debug",  # everything the service and the SDK would ever log
        LOG_CONTENT="true",
        WEB_CONCURRENCY="1",
        PORT=str(free_port()),
        DATABASE_URL=f"sqlite:///{database}",
        BUDGET_DEFAULT_MAX_TOKENS="5",  # a request without max_tokens reserves its prompt and 5
    )
    assert run_flask(env, "db", "upgrade").returncode == 0
    created = [
        run_flask(env, "keys", "create", "--name", "a", "--daily-tokens", "40"),  # spent after two calls
        run_flask(env, "keys", "create", "--name", "b"),
        run_flask(env, "keys", "create", "--name", "gone"),
    ]
    client_keys = [c.stdout.strip() for c in created]
    assert all(k.startswith(KEY_PREFIX) for k in client_keys)
    key_a, key_b, revoked = client_keys
    revoking = run_flask(env, "keys", "revoke", revoked[:12])
    assert revoking.returncode == 0
    never_issued = KEY_PREFIX + secrets.token_urlsafe(32)
    secrets_to_find = [upstream_key, compaction_key, *client_keys, never_issued]

    served = Served(env)
    served.wait_for("LLM upstream: OpenAI at")
    url = served.url
    responses: list[requests.Response] = []

    def call(method: str, path: str, key: str | None = None, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        response = requests.request(method, url + path, headers=headers, timeout=30, **kwargs)
        responses.append(response)
        return response

    try:
        chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}
        assert call("POST", "/openai-completion", key_a, json={"prompt": "hi", "user_id": "alice"}).status_code == 200
        payload = {"messages": [{"role": "user", "content": "hi"}], "user_id": "alice"}
        assert call("POST", "/process-payload/", key_a, json=payload).status_code == 200
        assert call("POST", "/v1/chat/completions", key_b, json=chat).status_code == 200
        upstream.enqueue(StreamReply(pieces=["streamed ", "reply"]))
        assert call("POST", "/v1/chat/completions", key_b, json={**chat, "stream": True}).status_code == 200
        assert call("GET", "/conversations", key_a).status_code == 200
        assert call("GET", "/conversations/alice", key_a).status_code == 200
        assert call("GET", "/conversations/alice/usage", key_a).status_code == 200
        assert call("GET", "/v1/models", key_a).status_code == 200
        # The upstream echoes our key in its errors, as OpenAI's does for a wrong key.
        upstream.enqueue(Status(401, f"Incorrect API key provided: {upstream_key}."))
        assert call("POST", "/openai-completion", key_b, json={"prompt": "x"}).status_code == 502
        upstream.enqueue(Status(400, f"Bad request made with key {upstream_key}"))
        assert call("POST", "/v1/chat/completions", key_b, json=chat).status_code == 400
        # Wrong, revoked and missing client keys; a key pasted into the path (logged paths are scrubbed).
        assert call("POST", "/openai-completion", never_issued, json={"prompt": "x"}).status_code == 401
        assert call("POST", "/openai-completion", revoked, json={"prompt": "x"}).status_code == 401
        assert call("POST", "/openai-completion", json={"prompt": "x"}).status_code == 401
        assert call("GET", f"/conversations/{key_a}", key_a).status_code == 404
        assert call("GET", f"/conversations/{key_a}", never_issued).status_code == 401
        # Key A has spent 36 of its 40 tokens (18 per call): the budget's 429.
        assert call("POST", "/openai-completion", key_a, json={"prompt": "more"}).status_code == 429
        assert call("DELETE", "/conversations/alice", key_a).status_code == 204
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert call("GET", path).status_code == 200
    finally:
        log = served.stop()

    assert len(upstream.chat_requests()) == 6  # the traffic really reached the model
    listed = run_flask(env, "keys", "list")
    outputs = {
        "responses": "\n".join(f"{r.status_code} {dict(r.headers)} {r.text}" for r in responses),
        "gunicorn log": log,
        "CLI logs and listing": "".join(c.stderr for c in created) + revoking.stdout + revoking.stderr + listed.stdout,
    }
    files = sorted(Path(tmp_path).glob("served.db*"))
    assert files and database in files
    stored = b"".join(path.read_bytes() for path in files)  # the database, its WAL, every page
    assert b"hello" in stored and b"fake-model" in stored  # the traffic was recorded here

    for secret in secrets_to_find:
        for where, text in outputs.items():
            assert secret not in text, f"a key appears in the {where}"
        assert secret.encode() not in stored, "a key appears in the database files"
    # The upstream's echo was scrubbed, not dropped: the client still learns what happened.
    assert "[redacted]" in outputs["responses"]
