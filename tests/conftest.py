"""Fixtures: the app on each database backend, a client, a CLI runner, the fake upstream.

Every app test runs on SQLite and, when TEST_DATABASE_URL is set (it always is in CI),
again on PostgreSQL. Redis tests use TEST_REDIS_URL. Without them those runs are skipped
with a reason, never silently passed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_upstream import FakeUpstream  # noqa: E402
from support import CASES_RUN, UPSTREAM_KEY  # noqa: E402

from app import create_app  # noqa: E402
from extensions import db  # noqa: E402


def pytest_terminal_summary(terminalreporter) -> None:
    """Say how many generated cases the property-based tests ran (closing notes quote it)."""
    if CASES_RUN:
        terminalreporter.section("property-based cases run")
        for kind, count in sorted(CASES_RUN.items()):
            terminalreporter.write_line(f"{kind}: {count}")
        terminalreporter.write_line(f"total: {sum(CASES_RUN.values())}")


def run_migrations(url: str) -> None:
    """Build the schema at `url` from nothing with the project's migrations."""
    from flask_migrate import upgrade

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "APP_ENV": "testing", "LLM_OFFLINE": True})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    app.extensions["llm"].close()


def reset_postgres(url: str) -> None:
    """Drop everything in the public schema of the test database."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "chat_history.db"
    run_migrations(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """TEST_DATABASE_URL, migrated once for the session; skips when unset."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("TEST_DATABASE_URL is not set: PostgreSQL run skipped (.ci/run sets it)")
    reset_postgres(url)
    run_migrations(url)
    return url


@pytest.fixture
def redis_url() -> str:
    """TEST_REDIS_URL with its database emptied; skips when unset."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: Redis run skipped (.ci/run sets it)")
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A freshly migrated, empty database of each backend."""
    if request.param == "sqlite":
        path = tmp_path / "chat_history.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE messages, api_key_usage, api_keys RESTART IDENTITY"))
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    """The fake OpenAI-compatible server, one for the session."""
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream(request) -> None:
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").reset()


def app_settings(database_url: str, upstream: FakeUpstream | None = None, **overrides) -> dict:
    """The test configuration of an app on `database_url`, answered by `upstream` when given
    (set LLM_OFFLINE=True otherwise), rate limits off, then `overrides`."""
    config = {
        "TESTING": True,
        "APP_ENV": "testing",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "OPENAI_MODEL": "fake-model",
        "OPENAI_MAX_RETRIES": 0,
        "OPENAI_TIMEOUT": 10.0,
        "SYSTEM_PROMPT": "",
        "RATELIMIT_ENABLED": False,
        "RATELIMIT_STORAGE_URI": "memory://",
    }
    if upstream is not None:
        config.update({"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": upstream.base_url})
    config.update(overrides)
    return config


def migrated_sqlite(name: str) -> str:
    """The URL of a new, migrated SQLite file in a temporary folder, for a module's own app."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-")) / f"{name}.db"
    run_migrations(f"sqlite:///{path}")
    return f"sqlite:///{path}"


@pytest.fixture
def app_factory(upstream) -> Iterator[Callable[..., object]]:
    """Build apps on the fake upstream, on the database given; closed after the test."""
    apps = []

    def factory(database_url: str, **overrides):
        app = create_app(app_settings(database_url, upstream, **overrides))
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["llm"].close()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def make_app(database_url, app_factory) -> Callable[..., object]:
    """Build an app on the test database (each backend) and the fake upstream, with overrides."""
    return lambda **overrides: app_factory(database_url, **overrides)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class _TrackedResponses:
    """WSGI middleware counting responses not yet closed, so a test can wait for them."""

    def __init__(self, app) -> None:
        self.app = app
        self.active = 0
        self.idle = threading.Condition()

    def __call__(self, environ, start_response):
        with self.idle:
            self.active += 1
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return _Closing(body, self._done)

    def _done(self) -> None:
        with self.idle:
            self.active -= 1
            self.idle.notify_all()

    def wait_idle(self, timeout: float = 20) -> bool:
        """Block until every response has been closed (streams included)."""
        with self.idle:
            return self.idle.wait_for(lambda: self.active == 0, timeout)


class _Closing:
    def __init__(self, body, on_close) -> None:
        self._body, self._on_close = body, on_close

    def __iter__(self):
        return iter(self._body)

    def close(self) -> None:
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._on_close()


class LiveServer:
    """The app served over real HTTP by werkzeug in a thread, on a free port."""

    def __init__(self, app) -> None:
        self.tracker = _TrackedResponses(app)
        self._server = make_server("127.0.0.1", 0, self.tracker, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_idle(self, timeout: float = 20) -> bool:
        """Block until every response, streamed ones included, is finished and closed."""
        return self.tracker.wait_idle(timeout)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def live_server(app) -> Iterator[LiveServer]:
    server = LiveServer(app)
    yield server
    server.stop()
