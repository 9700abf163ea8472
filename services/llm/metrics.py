"""The router's own Prometheus metrics (served with the rest by /metrics, telemetry.py)."""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge

# In multiprocess mode a metric writes its file when it is made (see telemetry.py).
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

MALFORMED_CHUNKS = Counter(
    "gateway_upstream_malformed_chunks_total",
    "Stream events skipped because they were not JSON, by deployment",
    ["deployment"],
)
# Set by the process that last saw the breaker change or read it (/readyz, /metrics):
# with Redis, every process sees the same breaker, so the most recent sample is the state.
BREAKER_OPEN = Gauge(
    "gateway_upstream_breaker_open",
    "1 while a deployment's circuit breaker is open (or half open), 0 while closed",
    ["deployment"],
    multiprocess_mode="livemostrecent",
)
# 1 while a process keeps breakers in its own memory because Redis is unreachable (as
# gateway_ratelimit_degraded says of the rate limits).
BREAKERS_DEGRADED = Gauge(
    "gateway_upstream_breakers_degraded",
    "1 while circuit breakers are kept per process because their shared storage is unreachable",
    multiprocess_mode="livemax",
)
