"""gunicorn settings, read from the environment (and .env). `make run` uses this file.

A chat reply streams for seconds to minutes, so a process must hold thousands of open
requests at once. The default worker is gevent: each connection is a greenlet, and the
app's blocking I/O (sockets of the openai SDK, psycopg, redis-py; locks; sleeps) is
monkey-patched by gunicorn to yield instead of blocking the process. Concurrency is
WEB_CONCURRENCY x GUNICORN_WORKER_CONNECTIONS. GUNICORN_WORKER_CLASS=gthread keeps the
thread worker (concurrency WEB_CONCURRENCY x GUNICORN_THREADS). bench/README.md has
the measurements behind the choice.
"""

import gc
import glob
import os
import platform
import resource
import sys
import tempfile

from dotenv import load_dotenv
from gunicorn.glogging import Logger

load_dotenv()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gunicorn_errors import json_error_worker  # noqa: E402
from logformat import JsonFormatter  # noqa: E402  (standard library only: the master stays light)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None


bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5000')}"
workers = _int("WEB_CONCURRENCY", 1)
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "").strip().lower() or "gevent"
if worker_class not in {"gevent", "gthread"}:
    raise SystemExit(f"GUNICORN_WORKER_CLASS must be gevent or gthread, got {worker_class!r}")
# gunicorn answers a request line over limit_request_line (414), headers over
# limit_request_field_size / limit_request_fields (431) and non-HTTP (400) itself, before
# the app; the worker writes those answers in the app's JSON envelope (gunicorn_errors.py).
worker_class = json_error_worker(worker_class)
# gevent: open connections per process (each an idle greenlet until it sends a request).
# Held streams, idle keep-alive clients and slow clients all count against it.
worker_connections = _int("GUNICORN_WORKER_CONNECTIONS", 10000)
# gthread only: requests served at once per process.
threads = _int("GUNICORN_THREADS", 8)
# A worker that is silent this long is killed. Both workers heartbeat from their main
# loop (gevent: a greenlet), so a request waiting on the LLM does not count as silence.
timeout = _int("TIMEOUT", 120)
# On SIGTERM, in-flight requests get this long to finish (and record both turns).
graceful_timeout = _int("GRACEFUL_TIMEOUT", 90)
# Recycle workers after this many requests (0: never); jitter staggers the restarts.
max_requests = _int("MAX_REQUESTS", 0)
max_requests_jitter = max(max_requests // 10, 0)
# Also, under gevent, how long a connection may take to send a whole request head: idle
# and half-sent connections are closed after it.
keepalive = 5
# Each worker builds the app after fork: no database connection crosses a fork.
preload_app = False
# The app writes one JSON line per request itself, with request id and tokens.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


class JsonLogger(Logger):
    """gunicorn's own messages as JSON lines, scrubbed of keys like the app's.

    At debug level gunicorn logs each request's path, where a careless client may have
    put a key; every line goes through the same redaction as the app's.
    """

    def setup(self, cfg):
        super().setup(cfg)
        names = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "METRICS_TOKEN")
        secrets = tuple(filter(None, (os.environ.get(name, "").strip() for name in names)))
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter(secrets))


logger_class = JsonLogger
# gunicorn's runtime control socket sits at one fixed path per user: several instances
# on one host (tests, blue/green) would take it from each other. Nothing here uses it.
control_socket_disable = True

# prometheus_client's multiprocess mode: every worker writes its samples to files here
# and /metrics sums them, so the numbers are right whichever worker answers the scrape.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gateway-metrics-"))


def _raise_open_files_limit() -> None:
    # Every open stream holds two descriptors (client and upstream); the usual soft limit
    # of 1024 would refuse the 500th. Raise it to the hard limit the host allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def on_starting(server):
    _raise_open_files_limit()
    # The openai SDK names the platform in a header; Python's platform module learns the
    # processor by running `uname -p` on first use, and caches it. Learn it here, once,
    # before the fork: in a fresh gevent worker every request of a first burst would miss
    # the cache and fork its own subprocess (1,000 streams to a fresh worker: 37% of its
    # CPU, and half the connections timed out before their request was read).
    platform.platform()
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(metrics_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(metrics_dir, "*.db")):
        os.remove(stale)  # samples of a previous run would be added to ours
    storage = os.environ.get("RATELIMIT_STORAGE_URI", "memory://") or "memory://"
    enabled = os.environ.get("RATELIMIT_ENABLED", "true").strip().lower() not in {"0", "false", "no", "off"}
    if enabled and storage.startswith("memory://") and server.cfg.workers > 1:
        server.log.warning(
            "RATELIMIT_STORAGE_URI is memory:// with %d worker processes: each process counts its own "
            "limits, so clients get up to %d times the configured budget. Use redis:// to share them.",
            server.cfg.workers,
            server.cfg.workers,
        )


def post_worker_init(worker):
    # Each worker sweeps abandoned exchanges (those a killed worker left pending) at start
    # and every SWEEP_INTERVAL_SECONDS; see services/sweeper.py.
    from services.sweeper import start_sweeper

    # The app is built: its modules, models and schemas live as long as the worker. Moved
    # out of the collector's sight (gc.freeze), they are no longer walked by every full
    # collection, which stops all of a gevent worker's streams while it runs: with 1,000
    # streams open a full collection took 150 ms, 75 ms after the freeze (bench/README.md).
    # Collected first, and before the sweeper's first transaction, so no garbage and no
    # request's objects are frozen with it (the cycle collector never frees a frozen cycle).
    gc.collect()
    gc.freeze()
    worker.log.info("worker %s: %d objects of the built app frozen (gc.freeze)", worker.pid, gc.get_freeze_count())
    start_sweeper(worker.wsgi)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
