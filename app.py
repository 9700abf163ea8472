"""The application factory. `gunicorn 'app:create_app()'` and `flask --app app` use it."""

from __future__ import annotations

import logging
import os
from typing import Any

from dotenv import load_dotenv
from flask import Flask
from flask_cors import CORS
from flask_openapi3 import Info, OpenAPI
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from werkzeug.middleware.proxy_fix import ProxyFix

from auth import register_authentication
from cli import register_commands
from config import load_settings, resolve_defaults, validate_settings
from database import WRITER_QUEUE, configure_engine, engine_options, writer_queue_for
from errors import register_error_handlers, reject_invalid
from extensions import db, limiter, migrate, sock
from logformat import JsonFormatter
from routes import register_blueprints
from routes.console import register_console
from routes.openapi import SECURITY_SCHEMES
from schemas import CONVERSATION_HEADER
from services.chat import ChatPipeline, ChatSettings
from services.compactor import Compactor, CompactorSettings
from services.journal import Journal
from services.llm import build_llm
from services.recorder import ExchangeRecorder
from telemetry import REQUEST_ID_HEADER, register_request_telemetry


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings from the environment (then `test_config`), extensions, routes."""
    if test_config is None:
        load_dotenv()  # gunicorn does not read .env itself; existing variables win
    app = OpenAPI(
        __name__,
        info=Info(title="LLM chat gateway", version="0.1.0", description="Chat with server-side memory."),
        doc_prefix="/openapi",
        security_schemes=SECURITY_SCHEMES,
        # The schemas validate every view's parameters; a failure is our JSON 400.
        validation_error_status=400,
        validation_error_callback=reject_invalid,
        instance_relative_config=True,
        static_folder=None,
    )
    configure(app, test_config)
    trust_proxies(app)
    configure_logging(app)
    register_request_telemetry(app)  # first: its response hook runs last, after the limiter's headers
    register_authentication(app)  # before the limiter, which counts per key
    register_cors(app)
    register_extensions(app)
    register_chat(app)
    register_blueprints(app)
    register_console(app)  # off unless CONSOLE_ENABLED
    register_error_handlers(app)
    register_commands(app)
    register_shell_context(app)
    return app


def configure(app: Flask, test_config: dict[str, Any] | None) -> None:
    """Load and check the settings; default the database to instance/chat_history.db."""
    app.config.update(load_settings())
    if test_config:
        app.config.update(test_config)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        os.makedirs(app.instance_path, exist_ok=True)
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, "chat_history.db")
    if not app.config.get("JOURNAL_PATH"):
        app.config["JOURNAL_PATH"] = default_journal_path(app.instance_path, app.config["SQLALCHEMY_DATABASE_URI"])
    resolve_defaults(app.config)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config["SQLALCHEMY_DATABASE_URI"], app.config)
    app.json.sort_keys = False
    validate_settings(app.config)


def default_journal_path(instance_path: str, database_url: str) -> str:
    """instance/<database name>.journal: the SQLite file's name, or the server database's."""
    try:
        name = make_url(database_url).database or "memory"
    except (ArgumentError, ValueError):
        name = "database"  # validated (and refused) by engine_options
    stem = os.path.splitext(os.path.basename(name))[0] or "memory"
    return os.path.join(instance_path, stem + ".journal")


def trust_proxies(app: Flask) -> None:
    """Believe X-Forwarded-For only from the TRUSTED_PROXIES proxies in front of us.

    With 0 (the default) the header is ignored: a client cannot name itself someone else
    to escape its rate limit. With N, the address N hops back is the client's.
    """
    hops = app.config["TRUSTED_PROXIES"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_port=0, x_prefix=0)


def register_cors(app: Flask) -> None:
    """CORS headers for the CORS_ORIGINS only; with none set, browsers get no cross-origin access."""
    origins = app.config["CORS_ORIGINS"]
    if not origins:
        return
    CORS(
        app,
        origins=origins,
        allow_headers=["Authorization", "Content-Type", CONVERSATION_HEADER, REQUEST_ID_HEADER],
        expose_headers=[
            CONVERSATION_HEADER,
            REQUEST_ID_HEADER,
            "Retry-After",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ],
        methods=["GET", "POST", "DELETE", "OPTIONS"],
        max_age=600,
        supports_credentials=False,  # keys travel in Authorization, never in cookies
    )


def configure_logging(app: Flask) -> None:
    """JSON log lines on stderr at LOG_LEVEL, unless the root logger is set up already (pytest)."""
    root = logging.getLogger()
    if not root.handlers:
        names = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "METRICS_TOKEN")
        secrets = tuple(s for s in (app.config.get(name) for name in names) if s)
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter(secrets))
        root.addHandler(handler)
        root.setLevel(app.config["LOG_LEVEL"])
    app.logger.setLevel(app.config["LOG_LEVEL"])
    logging.getLogger("gateway").setLevel(app.config["LOG_LEVEL"])
    # The SDK's HTTP client logs every upstream call at INFO; our request line has it.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger(noisy).level))


# A WebSocket connection pings its client this often: an idle one (a long model call) stays
# open through proxies that close silent connections (nginx's default: after 60 s).
WEBSOCKET_PING_SECONDS = 25


def register_extensions(app: Flask) -> None:
    """Bind db, migrate, limiter and sock to `app`."""
    db.init_app(app)
    migrate.init_app(app, db)
    limiter.init_app(app)
    # A WebSocket message may be as large as a request body; a larger one closes the connection (1009).
    options = {"max_message_size": app.config["MAX_CONTENT_LENGTH"], "ping_interval": WEBSOCKET_PING_SECONDS}
    app.config.setdefault("SOCK_SERVER_OPTIONS", options)
    sock.init_app(app)
    with app.app_context():
        configure_engine(db.engine)
        app.extensions[WRITER_QUEUE] = writer_queue_for(db.engine)


def register_chat(app: Flask) -> None:
    """Build this process's one LLM client, exchange recorder and chat pipeline, and say
    which model answers. Endings journaled before a restart are replayed in the background."""
    llm = build_llm(app.config)
    app.extensions["llm"] = llm
    recorder = ExchangeRecorder(app, Journal(app.config["JOURNAL_PATH"]))
    app.extensions["exchange_recorder"] = recorder
    settings = ChatSettings.from_config(app.config, llm)
    compactor = Compactor(app, llm, CompactorSettings.from_config(app.config, settings.prices))
    app.extensions["compactor"] = compactor
    app.extensions["chat"] = ChatPipeline(llm, settings, recorder, compactor)
    if recorder.journal.pending():
        app.logger.warning("The journal %s holds exchanges to record; replaying it", recorder.journal.path)
        recorder.start_replayer()
    if llm.offline:
        app.logger.warning(
            "No OPENAI_API_KEY, OPENAI_BASE_URL or AZURE_OPENAI_ENDPOINT: answering from the built-in "
            "offline model (deterministic, for trying the service; replies are named 'offline')"
        )
    else:
        app.logger.info("LLM upstream: %s, default model %s", llm.describe(), llm.default_model)


def register_shell_context(app: Flask) -> None:
    """`flask shell` starts with db and the models imported."""
    from models import Message

    @app.shell_context_processor
    def shell_context() -> dict[str, Any]:
        return {"db": db, "Message": Message}
