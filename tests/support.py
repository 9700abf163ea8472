"""Helpers shared by the tests: everything a test module imports (conftest.py holds only fixtures)."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
import sqlalchemy as sa
import yaml
from fake_upstream import FakeUpstream, Hang
from fault_upstream import FaultUpstream
from werkzeug.serving import WSGIRequestHandler, make_server

from app import create_app
from extensions import db
from schemas import ResponseRequest
from services.responses import stream
from services.responses.items import items_to_chat_messages, new_id
from services.responses.objects import instructions_message, response_object

ROOT = Path(__file__).resolve().parent.parent

# Every table of the schema, children first: what a PostgreSQL test empties between tests.
EMPTY_ALL_TABLES = (
    "TRUNCATE messages, responses, conversations, upstream_attempts, api_key_usage, api_key_monthly_spend, api_keys, "
    "admins, audit_log, request_log, request_rollups, request_key_rollups, compaction_leases "
    "RESTART IDENTITY"
)

# Property-based cases run, by kind: conftest prints them at the end of the session.
CASES_RUN: collections.Counter[str] = collections.Counter()

# Built at run time so no key-shaped literal sits in the repository; tests search
# responses, rows and logs for it.
UPSTREAM_KEY = "sk-" + "testonly" * 4
# The Fernet key test apps seal compaction items with (production requires one).
COMPACTION_KEY = "dGVzdG9ubHktY29tcGFjdGlvbi1rZXktMzItYnl0ZXM="


def sse_events(lines) -> list[tuple[str | None, str]]:
    """(event name, data) pairs from the lines of a text/event-stream body."""
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((name, line[len("data: ") :]))
            name = None
    return events


def delta_texts(events) -> list[str]:
    """The text of each `delta` event, in order."""
    return [json.loads(data)["text"] for name, data in events if name == "delta"]


def create_client_key(app, name: str = "acme", *options: str) -> str:
    """A new client key, made as an operator makes one: `flask keys create`."""
    result = app.test_cli_runner().invoke(args=["keys", "create", "--name", name, *options])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def bearer(key: str) -> dict[str, str]:
    """The header that presents `key`."""
    return {"Authorization": f"Bearer {key}"}


def parse_request(body: Any) -> ResponseRequest:
    """The validated /v1/responses request (raises pydantic's ValidationError; see
    schemas.error_details / openai_param)."""
    return ResponseRequest.model_validate(body)


def openai_param(field: str) -> str | None:
    """A field path as OpenAI's error `param` spells it: "input.0.content" -> "input[0].content"; "body" -> None."""
    if field == "body":
        return None
    param = ""
    for part in field.split("."):
        param += f"[{part}]" if part.isdigit() else (f".{part}" if param else part)
    return param


def all_rows(app) -> dict[str, list[tuple]]:
    """Every row of every table, as tuples of values, by table name."""
    with app.app_context():
        inspector = sa.inspect(db.engine)
        with db.engine.connect() as conn:
            return {
                table: [tuple(row) for row in conn.execute(sa.text(f'SELECT * FROM "{table}"'))]
                for table in inspector.get_table_names()
            }


def rows_of(app, user_id: str | None = None) -> list[dict]:
    """Every stored message row (of `user_id` when given), oldest first, as dicts."""
    from models import Message

    with app.app_context():
        query = db.select(Message).order_by(Message.id)
        if user_id is not None:
            query = query.where(Message.user_id == user_id)
        return [m.to_dict() for m in db.session.scalars(query)]


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
    "OPENAI_MODEL",
    "RATELIMIT_ENABLED",
    "RATELIMIT_DEFAULT",
    "RATELIMIT_COMPLETION",
    "WEB_CONCURRENCY",
    "GUNICORN_THREADS",
    "GUNICORN_WORKER_CLASS",
    "GUNICORN_WORKER_CONNECTIONS",
    "PROMETHEUS_MULTIPROC_DIR",
    "LOG_CONTENT",
    "REQUIRE_API_KEY",
    "CORS_ORIGINS",
    "TRUSTED_PROXIES",
    "ALLOWED_MODELS",
    "ABANDON_AFTER_SECONDS",
    "SWEEP_INTERVAL_SECONDS",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
            "JOURNAL_PATH": str(tmp_path / "served.journal"),
            "WEB_CONCURRENCY": "2",
            "LOG_LEVEL": "info",
            "RATELIMIT_ENABLED": "false",
            # No background sweeper unless a test turns it on (tests/test_abandoned.py).
            "SWEEP_INTERVAL_SECONDS": "0",
        }
    )
    env.update(extra)
    return env


def upstream_service_env(tmp_path: Path, upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    """service_env for gunicorn answered by the fake `upstream` (no SDK retries), then `extra`."""
    return service_env(
        tmp_path,
        OPENAI_API_KEY=UPSTREAM_KEY,
        OPENAI_BASE_URL=upstream.base_url,
        OPENAI_MODEL="fake-model",
        OPENAI_MAX_RETRIES="0",
        **extra,
    )


def run_flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`flask --app app ARGS...` in its own process with `env`, as an operator runs it."""
    return subprocess.run(
        [str(BIN / "flask"), "--app", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


@functools.cache
def _migrated_template() -> Path:
    """A SQLite file built by the project's migrations, once per test process."""
    path = Path(tempfile.mkdtemp(prefix="served-template-")) / "template.db"
    run_migrations(f"sqlite:///{path}")
    return path


def _revisions(url: str) -> list[str]:
    """The Alembic revisions the database at `url` is stamped with ([] for none)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    except sa.exc.DatabaseError:
        return []
    finally:
        engine.dispose()


def _migrated_already(url: str) -> bool:
    """Make the database at `url` what `flask db upgrade` would, without a process of its own
    where that is a copy or nothing: a new SQLite file becomes a copy of the migrated template;
    a database already at the head revision is left alone. False where the CLI must migrate."""
    sqlite = sa.make_url(url)
    if sqlite.get_backend_name() == "sqlite" and sqlite.database and not Path(sqlite.database).exists():
        shutil.copy(_migrated_template(), sqlite.database)
        return True
    return _revisions(url) == _revisions(f"sqlite:///{_migrated_template()}")


class Served:
    """gunicorn started as `make run` starts it, stopped with SIGTERM. `make run` migrates
    first (`flask db upgrade`); with `migrate_by_cli` False that step is done in this process
    where it can be (_migrated_already: each `flask` process costs seconds of CPU), and
    tests/test_serve.py runs it as `make run` does."""

    def __init__(self, env: dict[str, str], *, migrate_by_cli: bool = False) -> None:
        if migrate_by_cli or not _migrated_already(env["DATABASE_URL"]):
            migrate = run_flask(env, "db", "upgrade")
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
        """Block until `text` has appeared in `count` log lines (each worker logs once), for
        at most `timeout` seconds in all; failing, stop gunicorn first (a test that fails
        here has not yet reached its own stop, and would leave the server running)."""
        seen, deadline = 0, time.monotonic() + timeout
        while seen < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"gunicorn never logged {text!r}:\n{self.stop()}")
            seen += text in line

    def request_lines(self) -> list[dict]:
        """The JSON request log lines written so far."""
        lines = []
        for line in self.output:
            if line.startswith("{") and '"event": "request"' in line:
                lines.append(json.loads(line))
        return lines

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._pump_thread.join(timeout=30)
        self.process.stdout.close()
        return "".join(self.output)


class TcpProxy:
    """A TCP relay on 127.0.0.1 to `target`, which a test can cut (the server "goes away")."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        self._running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._cut
            if refused:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection and refuse new ones, as a stopped server would."""
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._running = False
        self.cut()
        self._listener.close()


def run_migrations(url: str) -> None:
    """Build the schema at `url` from nothing with the project's migrations."""
    from flask_migrate import upgrade

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "APP_ENV": "testing", "LLM_OFFLINE": True})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    app.extensions["llm"].close()


def app_settings(database_url: str, upstream: FakeUpstream | None = None, **overrides) -> dict:
    """The test configuration of an app on `database_url`, answered by `upstream` when given
    (set LLM_OFFLINE=True otherwise), rate limits off, then `overrides`."""
    config = {
        "TESTING": True,
        "APP_ENV": "testing",
        "SQLALCHEMY_DATABASE_URI": database_url,
        # Each app a journal of its own: one test's unrecorded exchanges never reach another's.
        "JOURNAL_PATH": str(Path(tempfile.mkdtemp(prefix="journal-")) / "exchanges.journal"),
        "OPENAI_MODEL": "fake-model",
        "OPENAI_MAX_RETRIES": 0,
        "OPENAI_TIMEOUT": 10.0,
        "SYSTEM_PROMPT": "",
        "RATELIMIT_ENABLED": False,
        "RATELIMIT_STORAGE_URI": "memory://",
        "SWEEP_INTERVAL_SECONDS": 0,
        "COMPACTION_KEY": COMPACTION_KEY,
        # Stored conversations are summarised in the background only where a test asks: another
        # test's scripted upstream must not see summarising calls (tests/test_history_compaction.py).
        "COMPACTION_HISTORY": False,
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
        environ[_CLOSING] = _Closing(body, self._done)
        return environ[_CLOSING]

    def _done(self) -> None:
        with self.idle:
            self.active -= 1
            self.idle.notify_all()

    def wait_idle(self, timeout: float = 20) -> bool:
        """Block until every response has been closed (streams included)."""
        with self.idle:
            return self.idle.wait_for(lambda: self.active == 0, timeout)


# The environ key under which _TrackedResponses leaves a request's _Closing for _ClosingHandler.
_CLOSING = "tests.closing"


class _Closing:
    """A response body that calls `on_close` once, after the body's own close()."""

    def __init__(self, body, on_close) -> None:
        self._body, self._on_close = body, on_close
        self._closed = False

    def __iter__(self):
        return iter(self._body)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._on_close()


class _ClosingHandler(WSGIRequestHandler):
    """werkzeug's request handler, closing the response when the client drops the connection.

    After the body, werkzeug reads what the client may still send, then closes the response;
    when that read fails (the client reset the connection: the SDK's stream stops reading at
    `[DONE]` and closes its socket with the final chunk unread) it skips close(), which PEP 3333
    requires "whether the request was completed normally, or terminated early" and gunicorn
    always calls. Without this, 1 run in 6 a streamed reply's log line was never written."""

    def connection_dropped(self, error, environ=None) -> None:
        super().connection_dropped(error, environ)
        if environ is not None and _CLOSING in environ:
            environ[_CLOSING].close()


class LiveServer:
    """The app served over real HTTP by werkzeug in a thread, on a free port."""

    def __init__(self, app) -> None:
        self.tracker = _TrackedResponses(app)
        self._server = make_server("127.0.0.1", 0, self.tracker, threaded=True, request_handler=_ClosingHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_idle(self, timeout: float = 20) -> bool:
        """Block until every response, streamed ones included, is finished and closed."""
        return self.tracker.wait_idle(timeout)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def replies_in_flight_while(fault, server: LiveServer, upstream: FakeUpstream, key: dict, prefix: str):
    """A plain and a streamed /openai-completion request (conversations `<prefix>-plain` and
    `<prefix>-streamed`) held by the upstream until `fault()` has run; their answers: the
    plain one's JSON and the streamed one's text, both checked to be whole 200 answers."""
    release, arrivals = threading.Event(), threading.Semaphore(0)
    upstream.enqueue(Hang(release), Hang(release))
    upstream.on_request = lambda _received: arrivals.release()
    asks = [
        {"prompt": "plain in flight", "user_id": f"{prefix}-plain"},
        {"prompt": "streamed in flight", "user_id": f"{prefix}-streamed", "stream": True},
    ]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(requests.post, server.url + "/openai-completion", json=ask, headers=key, timeout=30)
            for ask in asks
        ]
        assert arrivals.acquire(timeout=30) and arrivals.acquire(timeout=30), "the requests never reached the upstream"
        upstream.on_request = None
        fault()
        release.set()
        plain, streamed = (future.result() for future in futures)
    assert (plain.status_code, streamed.status_code) == (200, 200), (plain.text, streamed.text)
    events = sse_events(streamed.text.splitlines())
    assert events[-1][0] == "done", events
    return plain.json(), "".join(delta_texts(events))


def poll_until(condition, seconds: float = 30) -> bool:
    """Poll `condition` until it holds, for at most `seconds`: for work a background thread
    does (a journal's replay) that no event announces to the test."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# -- tracing a request through the project's files ------------------------------------------


@dataclass(frozen=True)
class ProjectCall:
    """One call into the project's code during a traced request: the file of the nearest
    project frame that made it ("<server>" for none), the file and function called, and
    whether it entered that file (no frame of it on the stack already)."""

    caller: str
    called: str
    function: str
    entered: bool


def _project_file(filename: str) -> str | None:
    """`filename` relative to the project, for its own code (not tests, not the venv)."""
    root = str(ROOT) + "/"
    if not filename.startswith(root) or "/.venv/" in filename or "/tests/" in filename:
        return None
    return filename[len(root) :]


def trace_request(client, path: str, body: dict, headers: dict) -> tuple[int, list[ProjectCall]]:
    """POST one request (a streamed body read to its end) under sys.setprofile: its status
    and every call into the project's code it made, in order."""
    calls: list[ProjectCall] = []

    def profile(frame, event, _arg) -> None:
        called = _project_file(frame.f_code.co_filename) if event == "call" else None
        if called is None:
            return
        caller, entered, outer = None, True, frame.f_back
        while outer is not None:
            name = _project_file(outer.f_code.co_filename)
            caller = caller or name
            entered = entered and outer.f_code.co_filename != frame.f_code.co_filename
            outer = outer.f_back
        calls.append(ProjectCall(caller or "<server>", called, frame.f_code.co_name, entered))

    sys.setprofile(profile)
    try:
        response = client.post(path, json=body, headers=headers)
        response.get_data()
        response.close()
    finally:
        sys.setprofile(None)
    return response.status_code, calls


# -- the Responses API's translation, as the tests drive it -------------------------------------


def chat_messages_for(request, items) -> list[dict]:
    """The chat messages for one call: the request's instructions, then the items (history, then input)."""
    leading = instructions_message(request.instructions)
    return ([leading] if leading else []) + items_to_chat_messages(items)


def output_items_to_chat_message(output) -> dict:
    """A response's output items as the one assistant chat message to store (content and tool_calls)."""
    messages = items_to_chat_messages(output)
    if not messages:
        return {"role": "assistant", "content": ""}
    if len(messages) != 1:
        raise ValueError("A response's output must make one assistant message")
    return messages[0]


def failed_response(
    request, message: str, *, code: str = "server_error", response_id=None, created_at=None, output=()
) -> dict:
    """A "failed" response carrying {"code", "message"} (code one of the SDK's ResponseError codes)."""
    return response_object(
        request,
        response_id=response_id or new_id("resp"),
        created_at=created_at if created_at is not None else int(time.time()),
        model=request.model,
        output=output,
        status="failed",
        error={"code": code, "message": message},
    )


class ResponseStreamTranslator(stream.ResponseStreamTranslator):
    """The service's translator with what only the tests ask of it: a whole stream at once,
    and the reply so far as the chat message it is."""

    def translate(self, chunks):
        """Every event for a whole upstream stream; an exception from `chunks` passes through (then call fail)."""
        yield from self.start()
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.finish()

    def chat_message(self) -> dict:
        """The reply so far as the one assistant chat message to store."""
        return output_items_to_chat_message(self.output)


# -- routing (issue 21): routing files over fault upstreams, and the chat routes asked through them --


def routing_key(server: FaultUpstream) -> str:
    """The credential of the deployment served by `server`: built at run time, one per server,
    so a test can search answers, rows and logs for it."""
    return "sk-" + "routing" * 3 + str(server.port)


@dataclass
class Deployment:
    """One deployment of a routing file, served by a fault upstream. `key`: what its
    api_key_env variable holds (default: the one key its server accepts)."""

    role: str
    server: FaultUpstream
    fields: dict[str, Any] = field(default_factory=dict)
    key: str | None = None

    @property
    def name(self) -> str:
        """Unique per server: breaker state and metrics outlive a test within a process."""
        return f"{self.role}-{self.server.port}"

    @property
    def model(self) -> str:
        return self.fields.get("model", f"{self.role}-model")

    @property
    def key_env(self) -> str:
        return f"ROUTING_TEST_KEY_{self.server.port}"

    def as_yaml(self) -> dict[str, Any]:
        entry = {"name": self.name, "provider": "openai_compatible", "base_url": self.server.base_url}
        if self.fields.get("provider") == "azure":
            entry.update(base_url=self.server.endpoint, api_version="2024-10-21")
        return {**entry, "api_key_env": self.key_env, "model": self.model, **self.fields}


def deployment(server: FaultUpstream, role: str, *, key: str | None = None, **fields: Any) -> Deployment:
    """A deployment named `<role>-<port>` at `server` (model `<role>-model` unless given),
    with routing-file `fields` (priority, timeouts, capabilities...)."""
    return Deployment(role, server, fields, key)


def write_routing_file(
    path: Path, monkeypatch: pytest.MonkeyPatch, groups: dict[str, dict[str, Any]], router: dict | None = None
) -> Path:
    """Write the routing YAML for `groups` ({name: {"deployments": [Deployment...], other
    group keys}}) and `router` to `path`; put each deployment's key in its api_key_env
    variable (monkeypatch) and make its server accept only its own key."""
    document: dict[str, Any] = {"groups": {}}
    if router:
        document["router"] = router
    for name, group in groups.items():
        entries = []
        for routed in group["deployments"]:
            routed.server.key = routing_key(routed.server)
            monkeypatch.setenv(routed.key_env, routed.key or routing_key(routed.server))
            entries.append(routed.as_yaml())
        document["groups"][name] = {**group, "deployments": entries}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# Every chat route: the two seed routes, OpenAI's chat completions and Responses API.
CHAT_ROUTES = ("openai-completion", "process-payload", "chat-completions", "responses")


@dataclass
class ClientAnswer:
    """What a client of one chat route received. `whole`: the answer came as complete (a 200
    JSON body; a stream that ended with its route's own end: `done`, finish_reason "stop",
    response.completed). `error`: the error it got instead (a JSON error or an in-band one)."""

    status: int
    text: str
    whole: bool
    error: str | None = None
    model: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def ask_route(base_url: str, route: str, prompt: str, *, stream: bool, model: str = "fake-model") -> ClientAnswer:
    """Ask `route` of the service at `base_url` for `prompt` as its clients do: the seed routes
    over plain HTTP, the /v1 ones through the official SDK (no retries of its own)."""
    if route in ("openai-completion", "process-payload"):
        return _ask_seed_route(base_url, route, prompt, stream)
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)
    try:
        if route == "chat-completions":
            return _ask_chat_completions(client, prompt, stream, model)
        return _ask_responses(client, prompt, stream, model)
    except openai.APIStatusError as exc:
        return ClientAnswer(exc.status_code, "", False, exc.message, headers=dict(exc.response.headers))
    finally:
        client.close()


def _ask_seed_route(base_url: str, route: str, prompt: str, stream: bool) -> ClientAnswer:
    if route == "openai-completion":
        path, body, field_name = "/openai-completion", {"prompt": prompt}, "completion"
    else:
        path, body, field_name = "/process-payload/", {"messages": [{"role": "user", "content": prompt}]}, "content"
    with requests.post(base_url + path, json={**body, "stream": stream}, stream=stream, timeout=60) as response:
        headers = dict(response.headers)
        if response.status_code != 200 or not stream:
            answer = response.json()
            if response.status_code != 200:
                return ClientAnswer(response.status_code, "", False, answer.get("error"), headers=headers)
            return ClientAnswer(200, answer[field_name], True, model=answer.get("model"), headers=headers)
        events = sse_events(response.iter_lines(decode_unicode=True))
    text = "".join(delta_texts(events))
    name, data = events[-1] if events else (None, "{}")
    if name == "done":
        return ClientAnswer(200, text, True, model=json.loads(data).get("model"), headers=headers)
    return ClientAnswer(200, text, False, json.loads(data).get("error") if name == "error" else None, headers=headers)


def _ask_chat_completions(client: openai.OpenAI, prompt: str, stream: bool, model: str) -> ClientAnswer:
    messages = [{"role": "user", "content": prompt}]
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
        completion = raw.parse()
        text = completion.choices[0].message.content or ""
        return ClientAnswer(200, text, True, model=completion.model, headers=dict(raw.headers))
    parts, finish, answer_model = [], None, None
    try:
        for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
            answer_model = chunk.model or answer_model
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
    except openai.APIStatusError:
        raise  # the stream never opened: an HTTP error, answered as such by ask_route
    except openai.APIError as exc:  # an in-band error object
        return ClientAnswer(200, "".join(parts), False, exc.message, answer_model)
    return ClientAnswer(200, "".join(parts), finish == "stop", model=answer_model)


def _ask_responses(client: openai.OpenAI, prompt: str, stream: bool, model: str) -> ClientAnswer:
    if not stream:
        response = client.responses.create(model=model, input=prompt)
        error = response.error.message if response.error else None
        return ClientAnswer(200, response.output_text, response.status == "completed", error, response.model)
    parts, last = [], None
    try:
        for event in client.responses.create(model=model, input=prompt, stream=True):
            if event.type == "response.output_text.delta":
                parts.append(event.delta)
            last = event
    except openai.APIStatusError:
        raise
    except openai.APIError as exc:
        return ClientAnswer(200, "".join(parts), False, exc.message)
    final = getattr(last, "response", None)
    error = final.error.message if final is not None and final.error else None
    model_name = final.model if final is not None else None
    return ClientAnswer(200, "".join(parts), getattr(last, "type", None) == "response.completed", error, model_name)


@contextlib.contextmanager
def executed(app) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements (with their parameters) the app's engine runs inside the block; not
    SQLite's BEGIN, which database.py issues itself for every transaction."""
    seen: list[tuple[str, Any]] = []

    def keep(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement != "BEGIN":
            seen.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)
