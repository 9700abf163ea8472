"""The console's upstreams page: each deployment's endpoint, breaker, recent errors and
latency, and a button that sends it one small test request (audited)."""

from __future__ import annotations

from flask import current_app, render_template

from database import unit_of_work
from routes.console.blueprint import console_bp, current_admin
from services.console.audit import record_action
from services.console.upstream_probe import PROBE_MAX_TOKENS, ProbeOutcome, probe
from services.console.upstreams import breaker_view, deployments_of, health_of, recent_stats


def _render(outcome: ProbeOutcome | None = None, status: int = 200):
    llm = current_app.extensions["llm"]
    deployments = deployments_of(llm)
    breakers, scope = breaker_view(llm, current_app.config)
    with unit_of_work(write=False) as db_session:
        stats = recent_stats(db_session, [d["name"] for d in deployments])
    for deployment in deployments:
        deployment["breaker"] = breakers.get(deployment["name"])
        deployment["stats"] = stats[deployment["name"]]
        deployment["health"] = health_of(deployment["breaker"], deployment["stats"])
    page = render_template(
        "console/upstreams.html",
        deployments=deployments,
        breaker_scope=scope,
        outcome=outcome,
        probe_max_tokens=PROBE_MAX_TOKENS,
    )
    return page, status


@console_bp.get("/upstreams")
def upstreams_page():
    """Every deployment with its health, breaker, recent errors and latency."""
    return _render()


@console_bp.post("/upstreams/<name>/test")
def test_upstream_view(name: str):
    """Send the deployment one small chat completion (no database connection held while
    it runs) and show how it went; the audit log keeps it."""
    outcome = probe(current_app.extensions["llm"], name)
    if outcome is None:
        return render_template("console/error.html", title="No such deployment", message=name), 404
    with unit_of_work() as db_session:
        detail = {k: v for k, v in outcome.as_dict().items() if k in ("ok", "latency_ms", "outcome", "status_code")}
        record_action(db_session, current_admin().name, "upstream.test", name, detail)
    return _render(outcome)
