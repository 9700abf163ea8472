"""A body over MAX_CONTENT_LENGTH is answered 413, and every client reads that 413: also one
that writes its whole body before it reads anything (Python's urllib, which also asks for
Connection: close). Without a lingering close the server closed the connection with most of
the body unread, the kernel answered it with a reset, and the reset discarded the 413 before
the client read it (13 of 30 tries with a 2 MB body).

Under real gunicorn (one worker: a lingering close is each worker's own), both worker
classes, 25 tries each, with a Content-Length and chunked: a regression that resets 13 tries
in 30 would pass 25 tries unseen with a chance of (17/30)^25, under one in a million.
"""

from __future__ import annotations

import collections
import json
import urllib.error
import urllib.request

import pytest
from support import Served, service_env

BODY = b"x" * (2 * 1024 * 1024)  # twice the default MAX_CONTENT_LENGTH
TRIES = 25


def _post(url: str, data) -> int | str:
    """POST `data` with urllib as its documentation shows; the status, or what went wrong."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        assert json.loads(refused.read())["error"]["message"].startswith("Request body is too large")
        return refused.code
    except (urllib.error.URLError, OSError) as failure:  # a reset or broken pipe
        return type(getattr(failure, "reason", failure)).__name__


def _chunks():
    for start in range(0, len(BODY), 64 * 1024):
        yield BODY[start : start + 64 * 1024]


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_urllib_reads_the_413_of_a_body_over_the_limit_every_time(tmp_path, worker_class):
    served = Served(service_env(tmp_path, LLM_OFFLINE="true", GUNICORN_WORKER_CLASS=worker_class, WEB_CONCURRENCY="1"))
    try:
        served.wait_for("Booting worker")
        url = f"{served.url}/v1/chat/completions"
        declared = collections.Counter(_post(url, BODY) for _ in range(TRIES))
        chunked = collections.Counter(_post(url, _chunks()) for _ in range(TRIES))
        # The service is still well after all of it.
        with urllib.request.urlopen(f"{served.url}/healthz", timeout=10) as health:
            assert health.status == 200
    finally:
        served.stop()
    assert declared == {413: TRIES}
    assert chunked == {413: TRIES}
