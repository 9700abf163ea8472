"""What `make run` does, for real: `flask db upgrade`, then gunicorn with gunicorn.conf.py."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from support import UPSTREAM_KEY

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Variables a developer's shell might carry that would change what is tested here.
_OURS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "DATABASE_URL",
    "RATELIMIT_STORAGE_URI",
    "SYSTEM_PROMPT",
    "APP_ENV",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(_free_port()),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
            "WEB_CONCURRENCY": "2",
            "LOG_LEVEL": "info",
        }
    )
    env.update(extra)
    return env


class Served:
    """gunicorn started as `make run` starts it, stopped with SIGTERM."""

    def __init__(self, env: dict[str, str]) -> None:
        migrate = subprocess.run(
            [str(BIN / "flask"), "--app", "app", "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert migrate.returncode == 0, migrate.stderr
        self.url = f"http://{env['HOST']}:{env['PORT']}"
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "app:create_app()"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, count: int = 1, timeout: float = 30) -> None:
        """Block until `text` has appeared in `count` log lines (each worker logs once)."""
        seen = 0
        while seen < count:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"gunicorn never logged {text!r}:\n{''.join(self.output)}")
            seen += text in line

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._pump_thread.join(timeout=30)
        self.process.stdout.close()
        return "".join(self.output)


def test_gunicorn_serves_both_routes_through_an_openai_compatible_upstream(tmp_path, upstream):
    env = _service_env(
        tmp_path, OPENAI_API_KEY=UPSTREAM_KEY, OPENAI_BASE_URL=upstream.base_url, OPENAI_MODEL="fake-model"
    )
    served = Served(env)
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
    served = Served(_service_env(tmp_path))
    try:
        served.wait_for("built-in offline model", count=2)
        response = requests.post(f"{served.url}/openai-completion", json={"prompt": "anyone home?"}, timeout=30)
    finally:
        served.stop()

    assert response.status_code == 200
    assert response.json()["model"] == "offline"
    assert response.json()["completion"].startswith("[offline model] You said: 'anyone home?'")
