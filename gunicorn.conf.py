"""gunicorn settings, read from the environment (and .env). `make run` uses this file.

Requests spend seconds waiting on the LLM, so each process runs threads (gthread): a
sync worker would serve one request at a time and kill any request past its timeout.
Concurrency is WEB_CONCURRENCY x GUNICORN_THREADS.
"""

import glob
import os
import sys
import tempfile

from dotenv import load_dotenv
from gunicorn.glogging import Logger

load_dotenv()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from logformat import JsonFormatter  # noqa: E402  (standard library only: the master stays light)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None


bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5000')}"
workers = _int("WEB_CONCURRENCY", 1)
worker_class = "gthread"
threads = _int("GUNICORN_THREADS", 8)
# A worker that is silent this long is killed. gthread workers heartbeat from their main
# loop, so a request waiting on the LLM does not count as silence.
timeout = _int("TIMEOUT", 120)
# On SIGTERM, in-flight requests get this long to finish (and record both turns).
graceful_timeout = _int("GRACEFUL_TIMEOUT", 90)
# Recycle workers after this many requests (0: never); jitter staggers the restarts.
max_requests = _int("MAX_REQUESTS", 0)
max_requests_jitter = max(max_requests // 10, 0)
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
        secrets = tuple(filter(None, (os.environ.get("OPENAI_API_KEY"), os.environ.get("AZURE_OPENAI_API_KEY"))))
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter(secrets))


logger_class = JsonLogger
# gunicorn's runtime control socket sits at one fixed path per user: several instances
# on one host (tests, blue/green) would take it from each other. Nothing here uses it.
control_socket_disable = True

# prometheus_client's multiprocess mode: every worker writes its samples to files here
# and /metrics sums them, so the numbers are right whichever worker answers the scrape.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gateway-metrics-"))


def on_starting(server):
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

    start_sweeper(worker.wsgi)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
