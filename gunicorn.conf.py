"""gunicorn settings, read from the environment (and .env). `make run` uses this file."""

import os

from dotenv import load_dotenv

load_dotenv()

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5000')}"
# Requests spend seconds waiting on the LLM: threads keep a process serving others
# meanwhile. Concurrency is workers x threads.
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "90"))
# The app is built in each worker after fork: no database connection is shared.
preload_app = False
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# gunicorn's runtime control socket sits at one fixed path per user: several instances
# on one host (tests, blue/green) would take it from each other. Nothing here uses it.
control_socket_disable = True
