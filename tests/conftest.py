"""Fixtures: the app on each database backend, a client, a CLI runner, the fake upstream.

This file holds fixtures and pytest hooks only. Everything a test module imports (the
live server, the test configuration, key and SSE helpers, gunicorn and TCP-relay
harnesses) lives in tests/support.py; no test module imports from conftest. pytest's
`pythonpath` setting (pyproject.toml) puts the project root and tests/ on the path.

Every app test runs on SQLite and, when TEST_DATABASE_URL is set (it always is in CI),
again on PostgreSQL. Redis tests use TEST_REDIS_URL. Without them those runs are skipped
with a reason, never silently passed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fake_upstream import FakeUpstream
from support import CASES_RUN, EMPTY_ALL_TABLES, LiveServer, app_settings, run_migrations

from app import create_app
from extensions import db


def pytest_terminal_summary(terminalreporter) -> None:
    """Say how many generated cases the property-based tests ran (closing notes quote it)."""
    if CASES_RUN:
        terminalreporter.section("property-based cases run")
        for kind, count in sorted(CASES_RUN.items()):
            terminalreporter.write_line(f"{kind}: {count}")
        terminalreporter.write_line(f"total: {sum(CASES_RUN.values())}")


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
        conn.execute(sa.text(EMPTY_ALL_TABLES))
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


@pytest.fixture
def live_server(app) -> Iterator[LiveServer]:
    server = LiveServer(app)
    yield server
    server.stop()
