"""Issue 21, configuration: the routing file (groups, aliases, providers, keys, priorities,
least busy), what a bad file does at start-up, and the one retry loop with and without a
routing file (behaviour 13). Real local upstreams (tests/fault_upstream.py).
"""

from __future__ import annotations

import threading

import openai
import pytest
import yaml
from fake_upstream import Reply, Status, StreamReply
from fault_upstream import Silent, server_error
from support import UPSTREAM_KEY, ask_route, deployment, routing_key, write_routing_file

from config import ConfigError

QUICK = {"backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "deadline_seconds": 30}


def _sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30)


def _ask(client: openai.OpenAI, model: str = "fake-model", text: str = "hi"):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def test_without_a_routing_file_openai_max_retries_keeps_its_meaning(make_app, upstream, serve):
    """Behaviour 13: no routing file, OPENAI_MAX_RETRIES=2 (its default) and an upstream that
    answers 500 to everything: the upstream sees exactly 3 attempts for one client call (the
    router's loop; the SDK's own retries are off), and the client is told not to retry."""
    app = make_app(OPENAI_MAX_RETRIES=2)
    upstream.default = Status(500, "always broken")
    server = serve(app)

    with _sdk(server) as client, pytest.raises(openai.InternalServerError) as caught:
        _ask(client)

    assert caught.value.status_code == 502
    assert len(upstream.chat_requests()) == 3
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_with_a_routing_file_the_sdks_own_retries_are_off(routed, fault_upstreams, upstream):
    """Behaviour 13: with a routing file, OPENAI_MAX_RETRIES=2 no longer multiplies anything:
    a deployment with retries_per_deployment 0 sees exactly 1 attempt for one 500."""
    (solo,) = fault_upstreams(1)
    solo.enqueue(server_error())
    _, server = routed(
        {"fake-model": {"deployments": [deployment(solo, "solo")]}},
        {**QUICK, "retries_per_deployment": 0},
        OPENAI_MAX_RETRIES=2,
    )

    with _sdk(server) as client, pytest.raises(openai.APIStatusError) as caught:
        _ask(client)

    assert caught.value.status_code == 502
    assert len(solo.arrivals()) == 1
    assert upstream.chat_requests() == []


def test_groups_and_aliases_are_the_models_and_each_deployment_gets_its_own_model_name_and_key(routed, fault_upstreams):
    """Configuration: /v1/models lists the groups and their aliases; an alias reaches its
    group; each deployment is sent its own upstream model name and its own key (read from
    its api_key_env variable), an Azure one at its deployment's path with `api-key`."""
    openai_server, azure_server = fault_upstreams(2)
    azure_server.default = Reply(text="answered by azure")
    groups = {
        "fake-model": {
            "aliases": ["fake-model-2024-08-06"],
            "deployments": [deployment(openai_server, "openai", model="gpt-4o")],
        },
        "azure-model": {"deployments": [deployment(azure_server, "azure", provider="azure", model="gpt4o-prod")]},
    }
    _, server = routed(groups, QUICK)

    with _sdk(server) as client:
        listed = sorted(model.id for model in client.models.list())
        by_alias = _ask(client, "fake-model-2024-08-06", "by alias")
        by_azure = _ask(client, "azure-model", "to azure")

    assert listed == ["azure-model", "fake-model", "fake-model-2024-08-06"]
    assert by_alias.choices[0].message.content == "echo: by alias"
    assert by_azure.choices[0].message.content == "answered by azure"
    (sent,) = openai_server.received
    assert sent.body["model"] == "gpt-4o"
    assert sent.headers["authorization"] == f"Bearer {routing_key(openai_server)}"
    (azure_sent,) = azure_server.received
    assert azure_sent.path.startswith("/openai/deployments/gpt4o-prod/chat/completions")
    assert "api-version=2024-10-21" in azure_sent.path
    assert azure_sent.headers["api-key"] == routing_key(azure_server)


def test_a_model_that_is_no_group_or_alias_is_openais_404(routed, fault_upstreams):
    """Configuration: with a routing file, a model that is neither a group nor an alias is
    answered as OpenAI answers it (404, code model_not_found), and nothing is sent upstream."""
    (solo,) = fault_upstreams(1)
    _, server = routed({"fake-model": {"deployments": [deployment(solo, "solo")]}}, QUICK)

    with _sdk(server) as client, pytest.raises(openai.NotFoundError) as caught:
        _ask(client, "no-such-model")

    assert caught.value.code == "model_not_found"
    assert solo.received == []


def test_priority_is_tried_first_and_least_busy_within_it(routed, fault_upstreams):
    """Configuration (strategy priority, the default): priority 1 deployments take the
    traffic while they answer, a priority 2 one none; within priority 1, a call goes to the
    one with fewer calls in flight: while one of them holds a call, the next goes to the other."""
    first, second, spare = fault_upstreams(3)
    _, server = routed(
        {
            "fake-model": {
                "deployments": [
                    deployment(first, "first", priority=1),
                    deployment(second, "second", priority=1),
                    deployment(spare, "spare", priority=2),
                ]
            }
        },
        QUICK,
    )
    release, arrived = threading.Event(), threading.Semaphore(0)
    for server_ in (first, second):
        server_.enqueue(Silent(seconds=20, release=release, then=Reply(text="held")))
        server_.on_request = lambda _received: arrived.release()

    with _sdk(server) as client:
        held = threading.Thread(target=_ask, args=(client, "fake-model", "held"))
        held.start()
        assert arrived.acquire(timeout=5), "the first call never reached a deployment"
        busy, idle = (first, second) if first.received else (second, first)
        busy.on_request = idle.on_request = None
        idle.script.clear()
        answer = _ask(client, "fake-model", "while one is busy")
        release.set()
        held.join(timeout=30)

    assert answer.choices[0].message.content == "echo: while one is busy"
    assert (len(busy.received), len(idle.received), len(spare.received)) == (1, 1, 0)


def test_a_stream_counts_as_in_flight_for_as_long_as_it_is_relayed(routed, fault_upstreams):
    """Strategy least_busy: a stream being relayed (opened, its first words delivered, the
    rest still to come) keeps its deployment busy, so the next call goes to the other one;
    counting only the opening of a stream would send it to the same deployment."""
    first, second = fault_upstreams(2)
    resume = threading.Event()
    for server_ in (first, second):
        server_.enqueue(StreamReply(["held ", "stream"], hold_after=1, resume=resume, hold_max_seconds=20))
    _, server = routed(
        {"fake-model": {"strategy": "least_busy", "deployments": [deployment(first, "a"), deployment(second, "b")]}},
        QUICK,
    )
    with _sdk(server) as client:
        stream = client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hold"}], stream=True
        )
        chunks = iter(stream)
        assert next(chunks).choices[0].delta.role == "assistant"  # the stream is open and relayed
        busy, idle = (first, second) if first.received else (second, first)
        idle.script.clear()
        answer = _ask(client, "fake-model", "while a stream is relayed")
        resume.set()
        rest = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert answer.choices[0].message.content == "echo: while a stream is relayed"
    assert rest == "held stream"
    assert (len(busy.received), len(idle.received)) == (1, 1)


@pytest.mark.parametrize(
    ("broken", "path"),
    [
        (
            lambda doc: doc["groups"]["fake-model"]["deployments"][0].pop("model"),
            "groups.fake-model.deployments[0].model",
        ),
        (
            lambda doc: doc["groups"]["fake-model"]["deployments"][0].update(priority="first"),
            "groups.fake-model.deployments[0].priority",
        ),
        (lambda doc: doc["router"].update(max_attempts="many"), "router.max_attempts"),
    ],
    ids=["missing-model", "bad-priority", "bad-max-attempts"],
)
def test_a_bad_routing_file_stops_start_up_naming_the_field(
    database_url, app_factory, fault_upstreams, tmp_path, monkeypatch, broken, path
):
    """Configuration: a routing file that does not validate stops start-up with a
    ConfigError naming the field's path, never at the first request."""
    (solo,) = fault_upstreams(1)
    routing = write_routing_file(
        tmp_path / "routing.yaml", monkeypatch, {"fake-model": {"deployments": [deployment(solo, "solo")]}}, QUICK
    )
    document = yaml.safe_load(routing.read_text())
    broken(document)
    routing.write_text(yaml.safe_dump(document))

    with pytest.raises(ConfigError, match=path.replace("[", r"\[").replace("]", r"\]")):
        app_factory(database_url, ROUTING_FILE=str(routing))


def test_the_routing_file_never_holds_a_key_and_a_missing_key_variable_is_named(
    database_url, app_factory, fault_upstreams, tmp_path, monkeypatch
):
    """Configuration: the file names each key's variable, never the key; a variable that is
    not set stops start-up naming it (and no key appears in the message)."""
    (solo,) = fault_upstreams(1)
    routed_deployment = deployment(solo, "solo")
    routing = write_routing_file(
        tmp_path / "routing.yaml", monkeypatch, {"fake-model": {"deployments": [routed_deployment]}}
    )
    assert routing_key(solo) not in routing.read_text() and UPSTREAM_KEY not in routing.read_text()
    monkeypatch.delenv(routed_deployment.key_env)

    with pytest.raises(ConfigError, match=routed_deployment.key_env):
        app_factory(database_url, ROUTING_FILE=str(routing))


def test_every_route_answers_through_the_routing_file(routed, fault_upstreams):
    """Behaviour 14 (the plain case): every chat route, streamed and not, is answered by
    the routing file's deployment, not by the one-upstream settings."""
    (solo,) = fault_upstreams(1)
    solo.default = Reply(text="answered through the routing file")
    _, server = routed({"fake-model": {"deployments": [deployment(solo, "solo")]}}, QUICK)

    answers = [
        ask_route(server.url, route, "hello", stream=stream)
        for route in ("openai-completion", "process-payload", "chat-completions", "responses")
        for stream in (False, True)
    ]

    assert [(a.text, a.whole) for a in answers] == [("answered through the routing file", True)] * 8
    assert len(solo.arrivals()) == 8
