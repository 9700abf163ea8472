"""Fixtures: the app on each database backend, a client, a CLI runner, the fake upstream.

This file holds fixtures and pytest hooks only. Everything a test module imports (the
live server, the test configuration, key and SSE helpers, gunicorn and TCP-relay
harnesses) lives in tests/support.py; no test module imports from conftest. pytest's
`pythonpath` setting (pyproject.toml) puts the project root and tests/ on the path.

Every app test runs on SQLite and, when TEST_DATABASE_URL is set (it always is in CI),
again on PostgreSQL. Redis tests use TEST_REDIS_URL. Without them those runs are skipped
with a reason, never silently passed.

Under pytest-xdist (`make test` runs `-n`) each worker is a process of its own with a
PostgreSQL database of its own (TEST_DATABASE_URL's name plus `_gw0`, `_gw1`..., created
on the server and dropped at the end) and a Redis database number of its own (TEST_REDIS_URL's
number minus the worker's: /15, /14...), so no worker empties another's tables or keys.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
import pytest
import sqlalchemy as sa
from fake_upstream import FakeUpstream
from fault_upstream import FaultUpstream
from support import CASES_RUN, EMPTY_ALL_TABLES, LiveServer, app_settings, run_migrations, write_routing_file

from app import create_app
from extensions import db

# The xdist worker this process is ("gw0", "gw1"...), None in a plain `pytest` run.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")


# The files that take longest, slowest first (`--durations`, 2026-12-03: most of them drive
# gunicorn, Chromium or subprocesses, or fuzz): under xdist they start first, so no worker
# is left running one alone at the end. Shell patterns: every console page's browser file
# (a gunicorn and Chromium each) ranks as the first did.
SLOWEST_FILES = (
    "test_api_contract.py",
    "test_responses_websocket.py",
    "test_production.py",
    "test_readme_examples.py",
    "test_routing_retries.py",
    "test_secrets.py",
    "test_serve.py",
    "test_abandoned.py",
    "test_responses_api.py",
    "test_console*_browser.py",
    "test_postman_collection.py",
    "test_validation_properties.py",
    "test_routing_streams.py",
    "test_responses_params.py",
    "test_routing_timeouts.py",
    "test_routing_edges.py",
    "test_access_control.py",
)


class _CasesFromWorkers:
    """On the xdist controller: adds each worker's CASES_RUN as the worker finishes."""

    def pytest_testnodedown(self, node, error) -> None:
        CASES_RUN.update(getattr(node, "workeroutput", {}).get("cases_run", {}))


def pytest_configure(config) -> None:
    """On the xdist controller, collect the workers' CASES_RUN (see _CasesFromWorkers)."""
    # Registered only when xdist is loaded: its hook is unknown to pytest otherwise (-p no:xdist).
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workeroutput"):
        config.pluginmanager.register(_CasesFromWorkers())


def pytest_collection_modifyitems(items) -> None:
    """Give every test a node id of its own; under xdist, put SLOWEST_FILES first."""
    # schemathesis 4.32 names its items after the operation (`test_every...[GET /healthz]`),
    # but pytest 9.2 builds their node id from the bare function name, so all 24 shared one,
    # and xdist's per-file scheduling, which tracks tests by node id, ran only one of them.
    # (`_id` is pytest's own attribute, not exported.)
    shared = collections.Counter(item.nodeid for item in items)
    for item in items:
        if shared[item.nodeid] > 1:
            item._id = item.parent.id.child(item.name)
    if WORKER is not None:
        # A stable sort: each file's tests keep their order, and every worker collects the same list.
        items.sort(key=lambda item: _slowness_rank(item.path.name))


def _slowness_rank(name: str) -> int:
    """The place of the first SLOWEST_FILES pattern `name` matches; past them all for none."""
    return next((place for place, pattern in enumerate(SLOWEST_FILES) if fnmatch(name, pattern)), len(SLOWEST_FILES))


def pytest_sessionfinish(session) -> None:
    """On an xdist worker: hand its CASES_RUN to the controller, which prints the sum."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["cases_run"] = dict(CASES_RUN)


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


def on_postgres_server(url: str, *statements: str) -> None:
    """Run `statements` outside a transaction on the server's `postgres` maintenance database."""
    engine = sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def worker_redis_url(url: str, worker: str) -> str:
    """TEST_REDIS_URL for xdist worker `gwN`: database number N below the URL's (/15: gw0 /15,
    gw1 /14...), never 0, which may hold someone's data."""
    parts = urlsplit(url)
    number = int(parts.path.strip("/") or 0) - int(worker.removeprefix("gw"))
    if number < 1:
        pytest.fail(
            f"TEST_REDIS_URL {url}: worker {worker} would get Redis database {number}; "
            "give a higher database number (CI's is /15) or fewer workers"
        )
    return urlunsplit(parts._replace(path=f"/{number}"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "chat_history.db"
    run_migrations(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """TEST_DATABASE_URL, or under xdist a database of this worker's own on that server
    (`<name>_gw0`...), made empty for the session and dropped after it; skips when unset."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("TEST_DATABASE_URL is not set: PostgreSQL run skipped (.ci/run sets it)")
    if WORKER is None:
        yield url
        return
    own = sa.make_url(url)
    own = own.set(database=f"{own.database}_{WORKER}")
    # FORCE: a run killed midway may have left the database, and connections to it, behind.
    drop = f'DROP DATABASE IF EXISTS "{own.database}" WITH (FORCE)'
    on_postgres_server(url, drop, f'CREATE DATABASE "{own.database}"')
    yield own.render_as_string(hide_password=False)
    on_postgres_server(url, drop)


@pytest.fixture(scope="session")
def postgres_url(postgres_database) -> str:
    """The session's PostgreSQL test database, migrated once for the session; skips when unset."""
    reset_postgres(postgres_database)
    run_migrations(postgres_database)
    return postgres_database


@pytest.fixture
def redis_url() -> str:
    """TEST_REDIS_URL (under xdist, this worker's database number of it) emptied; skips when unset."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: Redis run skipped (.ci/run sets it)")
    if WORKER is not None:
        url = worker_redis_url(url, WORKER)
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


@pytest.fixture
def fault_upstreams() -> Iterator[Callable[..., list[FaultUpstream]]]:
    """`fault_upstreams(n, **options)`: n more fake upstreams of the test's own (each a real
    server, independent of the others and of `upstream`), options as FaultUpstream takes them;
    all stopped after the test."""
    servers: list[FaultUpstream] = []

    def start(count: int = 1, **options) -> list[FaultUpstream]:
        started = [FaultUpstream(**options).start() for _ in range(count)]
        servers.extend(started)
        return started

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def serve() -> Iterator[Callable[[object], LiveServer]]:
    """`serve(app)`: the app over real HTTP (a LiveServer), stopped after the test."""
    servers: list[LiveServer] = []

    def start(app) -> LiveServer:
        servers.append(LiveServer(app))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def routed(database_url, app_factory, serve, tmp_path, monkeypatch) -> Callable[..., tuple[object, LiveServer]]:
    """`routed(groups, router=None, **overrides)`: an app on the test database whose
    ROUTING_FILE is written for `groups` (see support.write_routing_file), served over
    HTTP; returns (app, live server). Each call writes a file of its own."""
    made = []

    def build(groups: dict, router: dict | None = None, **overrides) -> tuple[object, LiveServer]:
        made.append(None)
        path = write_routing_file(tmp_path / f"routing-{len(made)}.yaml", monkeypatch, groups, router)
        app = app_factory(database_url, ROUTING_FILE=str(path), **overrides)
        return app, serve(app)

    return build


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (no browser download), one for the
    session; skips with a reason where chromium is not installed."""
    from console_support import chromium_path
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def console_service(tmp_path_factory, upstream, browser) -> Iterator[object]:
    """gunicorn serving the console (and the API, keys required) on the fake upstream, with
    an admin made by `flask admins create`; one per test module, stopped after it."""
    from console_support import start_console_service

    service = start_console_service(tmp_path_factory.mktemp("console"), upstream)
    yield service
    service.served.stop()


@pytest.fixture
def page(browser, console_service):
    """A fresh browser page (no cookies) on the console service, closed after the test."""
    context = browser.new_context(base_url=console_service.url)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def sdk_of(serve) -> Iterator[Callable[[Any], openai.OpenAI]]:
    """`sdk_of(app)`: the official SDK pointed at the app served over real HTTP (no retries),
    closed after the test."""
    clients: list[openai.OpenAI] = []

    def connect(app) -> openai.OpenAI:
        clients.append(openai.OpenAI(base_url=f"{serve(app).url}/v1", api_key="unused", max_retries=0))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def request_log() -> Iterator[list[logging.LogRecord]]:
    """The records of the request log lines written while the test runs."""
    capture = _Capture()
    logger = logging.getLogger("gateway.request")
    logger.addHandler(capture)
    yield capture.records
    logger.removeHandler(capture)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path):
    """An empty database on each backend, for the migrations to build: a new SQLite file, or a
    schema of its own in this worker's PostgreSQL database (its migrated tables left alone)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    # TEST_DATABASE_URL (this xdist worker's own database of it); skips when unset.
    url = request.getfixturevalue("postgres_database")
    # A schema of its own, so the session's migrated test database is left alone.
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS migration_check CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA migration_check"))
    engine.dispose()
    yield_url = sa.make_url(url).update_query_dict({"options": "-csearch_path=migration_check"})
    return yield_url.render_as_string(hide_password=False)
