"""The console's Upstreams, Settings and Keys-in-money pages driven in headless Chromium
against gunicorn (issue 25), over a routing file of two real local deployments, one of
them failing: its breaker shows open, the test button answers on the healthy one and fails
on the other; the settings page holds no secret; a key's USD budgets are set in the forms.
Screenshots in tests/screenshots/ (git-ignored)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import yaml
from console_support import ADMIN, SECRET_KEY, ConsoleService, screenshot, sign_in
from fake_upstream import Reply
from fault_upstream import FaultUpstream, server_error
from support import UPSTREAM_KEY, Served, routing_key, run_flask, upstream_service_env

BREAKER = {"failures": 2, "cooldown_seconds": 600}


def _routing_file(path, primary: FaultUpstream, secondary: FaultUpstream) -> dict[str, str]:
    """Write a routing file of the two deployments (the primary first); the variables
    holding their keys."""
    keys = {}
    deployments = []
    for role, server, priority in (("primary", primary, 0), ("secondary", secondary, 1)):
        server.key = routing_key(server)
        variable = f"CONSOLE_{role.upper()}_KEY"
        keys[variable] = server.key
        deployments.append(
            {"name": role, "provider": "openai_compatible", "base_url": server.base_url, "api_key_env": variable,
             "model": f"{role}-model", "priority": priority}
        )  # fmt: skip
    routing = {
        "router": {"retries_per_deployment": 0, "backoff_seconds": 0.01, "breaker": BREAKER},
        "groups": {"fake-model": {"deployments": deployments}},
    }
    path.write_text(yaml.safe_dump(routing, sort_keys=False))
    return keys


@pytest.fixture(scope="module")
def routed_console(
    tmp_path_factory, upstream, browser
) -> Iterator[tuple[ConsoleService, FaultUpstream, FaultUpstream]]:
    """gunicorn (one worker: its breakers are its memory's) with the console on, routing
    to a failing primary and a healthy secondary; an admin made by the CLI."""
    primary, secondary = FaultUpstream().start(), FaultUpstream().start()
    primary.default = server_error()
    secondary.default = Reply(text="answered by the secondary")
    folder = tmp_path_factory.mktemp("routed-console")
    keys = _routing_file(folder / "routing.yaml", primary, secondary)
    env = upstream_service_env(
        folder, upstream, CONSOLE_ENABLED="true", SECRET_KEY=SECRET_KEY, ROUTING_FILE=str(folder / "routing.yaml"),
        WEB_CONCURRENCY="1", REQUIRE_API_KEY="false", **keys,
    )  # fmt: skip
    assert run_flask(env, "db", "upgrade").returncode == 0
    made = run_flask(env, "admins", "create", ADMIN)
    assert made.returncode == 0, made.stderr
    served = Served(env)
    try:
        served.wait_for("LLM upstream: 2 deployments")
        yield ConsoleService(served, env, made.stdout.strip()), primary, secondary
    finally:
        served.stop()
        primary.stop()
        secondary.stop()


@pytest.fixture
def routed_page(browser, routed_console):
    context = browser.new_context(base_url=routed_console[0].url)
    page = context.new_page()
    yield page
    context.close()


def _ask(service: ConsoleService, times: int) -> None:
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        for _ in range(times):
            answer = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content == "answered by the secondary"


def test_the_upstreams_page_shows_each_deployment_and_the_test_button_shows_the_outcome(routed_page, routed_console):
    service, primary, secondary = routed_console
    page = routed_page
    _ask(service, 3)  # the primary fails twice: its breaker opens
    sign_in(page, service)
    page.get_by_role("link", name="Upstreams").click()
    assert page.get_by_role("heading", name="Upstreams").is_visible()
    first = page.locator('tr.upstream[data-deployment="primary"]')
    second = page.locator('tr.upstream[data-deployment="secondary"]')
    assert first.locator(".breaker-state").inner_text() == "open"
    assert first.locator("td.health").inner_text() == "down"
    assert f"127.0.0.1:{primary.port}" in first.locator("td.host").inner_text()
    assert "HTTP 500" in first.locator("td.errors").inner_text()
    assert second.locator(".breaker-state").inner_text() == "closed"
    assert "3 replies" in second.locator("td.rate").inner_text()
    screenshot(page, "upstreams")

    asked_before = len(secondary.chat_requests())
    second.get_by_role("button", name="Send a test request").click()
    outcome = page.locator("section.probe")
    assert outcome.get_attribute("data-deployment") == "secondary"
    assert outcome.locator(".probe-outcome").inner_text() == "answered (ok, HTTP 200)"
    assert outcome.locator(".probe-latency").inner_text().endswith(" ms")
    assert len(secondary.chat_requests()) == asked_before + 1
    assert secondary.chat_requests()[-1]["max_completion_tokens"] == 16
    screenshot(page, "upstream-tested")

    page.locator('tr.upstream[data-deployment="primary"]').get_by_role("button", name="Send a test request").click()
    assert page.locator("section.probe .probe-outcome").inner_text() == "failed (UpstreamUnavailable, HTTP 500)"
    for secret in (primary.key, secondary.key, UPSTREAM_KEY):
        assert secret not in page.content()


def test_the_settings_page_shows_the_configuration_and_no_secret(routed_page, routed_console):
    service, primary, secondary = routed_console
    page = routed_page
    sign_in(page, service)
    page.get_by_role("link", name="Settings").click()
    assert page.get_by_role("heading", name="Settings").is_visible()
    assert page.locator('tr.setting[data-name="OPENAI_API_KEY"] td.value').inner_text() == "••••••"
    assert page.locator('tr.setting[data-name="SECRET_KEY"] td.value').inner_text() == "••••••"
    assert "CONSOLE_PRIMARY_KEY (set; value masked)" in page.locator("pre.routing").inner_text()
    html = page.content()
    for secret in (UPSTREAM_KEY, SECRET_KEY, service.password, primary.key, secondary.key):
        assert secret not in html
    screenshot(page, "settings")


def test_a_keys_usd_budgets_are_set_in_the_forms(routed_page, routed_console):
    service = routed_console[0]
    page = routed_page
    sign_in(page, service)
    page.goto("/console/keys")  # the console opens on its overview
    create = page.locator("form.create-key")
    create.get_by_label("Name").fill("team-money")
    create.get_by_label("Daily USD").fill("5")
    create.get_by_label("Monthly USD").fill("50")
    page.get_by_role("button", name="Create key").click()
    assert page.locator("#new-key").inner_text().startswith("gw_")

    page.goto("/console/keys")
    row = page.locator("tr.key", has=page.locator("td.name", has_text="team-money"))
    assert row.locator("td.usd-today").inner_text().strip() == "$0.00 / $5.00"
    assert row.locator("td.usd-month").inner_text().strip() == "$0.00 / $50.00"
    limits = row.locator("form.limits")
    limits.get_by_label("Daily USD").fill("0.5")
    limits.get_by_role("button", name="Save").click()
    row = page.locator("tr.key", has=page.locator("td.name", has_text="team-money"))
    assert row.locator("td.usd-today").inner_text().strip() == "$0.00 / $0.50"
    assert row.locator("td.usd-today meter").get_attribute("max") == "0.5"
    screenshot(page, "keys-money")
