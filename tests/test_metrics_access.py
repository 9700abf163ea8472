"""/metrics says nothing a client made up, and with METRICS_TOKEN answers its bearer alone.

Token counts are labelled by the models the service is configured to serve (the default
model, ALLOWED_MODELS, a routing file's groups and aliases) and `other`: a model name a
client sends (a customer's name, a secret pasted in the wrong field) is neither a time
series of its own nor shown to whoever reads /metrics.
"""

from __future__ import annotations

import logging

import openai
import pytest
import requests
from fake_upstream import Reply
from prometheus_client.parser import text_string_to_metric_families
from support import deployment

from config import ConfigError

TOKEN = "metrics-" + "t0ken" * 6


def _token_samples(text: str) -> dict[tuple[str, str], float]:
    return {
        (sample.labels["kind"], sample.labels["model"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gateway_tokens_total"
    }


def _scrape(base_url: str, token: str | None = None) -> dict[tuple[str, str], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = requests.get(f"{base_url}/metrics", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return _token_samples(answer.text)


def _models_added(before: dict, after: dict) -> set[str]:
    return {model for (kind, model), value in after.items() if value > before.get((kind, model), 0)}


def test_token_counts_name_configured_models_and_count_any_other_as_other(make_app, serve, upstream):
    server = serve(make_app())
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    made_up = "acme-corp-secret-project-x"
    before = _scrape(server.url)
    upstream.enqueue(Reply(model="fake-model-2024-07-18"), Reply(model=made_up))
    sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    sdk.chat.completions.create(model=made_up, messages=[{"role": "user", "content": "hi"}])
    after = _scrape(server.url)
    sdk.close()

    assert _models_added(before, after) == {"fake-model", "other"}
    assert after[("prompt", "other")] - before.get(("prompt", "other"), 0) > 0
    assert all(made_up not in model and "2024" not in model for _, model in after)


def test_allowed_models_and_routing_groups_and_aliases_are_labels(routed, fault_upstreams):
    (server,) = fault_upstreams(1)
    groups = {"fast": {"aliases": ["gpt-4o-mini"], "deployments": [deployment(server, "primary")]}}
    _, live = routed(groups)
    sdk = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
    before = _scrape(live.url)
    for model in ("fast", "gpt-4o-mini"):
        sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    sdk.close()
    assert _models_added(before, _scrape(live.url)) == {"fast", "gpt-4o-mini"}


@pytest.fixture
def guarded(make_app, serve):
    """A served app whose /metrics needs METRICS_TOKEN, with the failure limit on."""
    app = make_app(METRICS_TOKEN=TOKEN, RATELIMIT_ENABLED=True, AUTH_FAILURE_LIMIT="3 per minute")
    return serve(app)


def test_metrics_token_is_required_when_set(guarded):
    missing = requests.get(f"{guarded.url}/metrics", timeout=10)
    assert missing.status_code == 401
    assert missing.json()["code"] == "missing_metrics_token"
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    wrong = requests.get(f"{guarded.url}/metrics", headers={"Authorization": "Bearer " + TOKEN[:-1]}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_metrics_token"
    assert TOKEN not in missing.text + wrong.text
    _scrape(guarded.url, TOKEN)  # the right one: 200, Prometheus text
    # The rest of the operations routes stay open.
    assert requests.get(f"{guarded.url}/healthz", timeout=10).status_code == 200


def test_wrong_metrics_tokens_count_as_failed_keys(guarded):
    statuses = [
        requests.get(f"{guarded.url}/metrics", headers={"Authorization": "Bearer guess"}, timeout=10).status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]


def test_the_app_scrubs_the_metrics_token_from_its_log_lines(monkeypatch, tmp_path):
    """create_app's own log handler (gunicorn's too) is given the token as a secret."""
    from app import create_app

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # as under gunicorn: no handler yet, so the app installs its JSON one
    try:
        monkeypatch.setenv("METRICS_TOKEN", TOKEN)
        app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'm.db'}", "LLM_OFFLINE": True})
        (handler,) = root.handlers
        record = logging.LogRecord("x", logging.WARNING, __file__, 1, "token %s", (TOKEN,), None)
        assert TOKEN not in handler.format(record)
        app.extensions["llm"].close()
    finally:
        root.handlers[:] = saved


@pytest.mark.parametrize("value", ["short", "x" * 15, "spaces in the token!", "tökentökentökentöken"])
def test_a_weak_or_odd_metrics_token_stops_start_up(make_app, value):
    with pytest.raises(ConfigError, match="METRICS_TOKEN must be") as refused:
        make_app(METRICS_TOKEN=value)
    assert value not in str(refused.value)
