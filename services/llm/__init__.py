"""The LLM behind the service: OpenAI, Azure OpenAI, any OpenAI-compatible server, or offline.

One client per process, built by `build_llm` in create_app and kept in
app.extensions["llm"]: the router, or the offline model. Its rooms: `types` (what a call
gives back), `errors` (how a call fails, as the service answers it), `routing` (the
routing file: groups and deployments), `router` (a model name to its deployments),
`call` (the retry loop), `continuation` (a stream relayed and continued elsewhere),
`breaker` (circuit breakers, shared through Redis), `metrics`, `openai_client` (one
deployment's calls through the SDK), `offline` (the stand-in model), `http_pool` (the
connection pools the calls go through), `sse_reader` (a streamed completion's body read
as chunks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import openai

from config import uses_offline_model
from services.llm.breaker import Breakers
from services.llm.errors import (
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from services.llm.http_pool import upstream_http_clients
from services.llm.offline import OFFLINE_MODEL, OfflineChat
from services.llm.openai_client import OpenAIChat
from services.llm.router import Router
from services.llm.routing import WILDCARD, Deployment, api_key, load_routing
from services.llm.types import Attempt, ChatStream, Completion

__all__ = [
    "OFFLINE_MODEL",
    "ChatStream",
    "Completion",
    "OfflineChat",
    "OpenAIChat",
    "Router",
    "Attempt",
    "UpstreamAuthFailed",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "build_llm",
]


def build_llm(config: Mapping[str, Any]) -> Router | OfflineChat:
    """The process's one LLM client, chosen by the configuration: the offline model, or
    the router over the routing file's deployments (or the one OPENAI_* / AZURE_* upstream).
    Raises ConfigError for a routing file that cannot be used."""
    if uses_offline_model(config):
        return OfflineChat()
    routing = load_routing(config)
    http_clients = upstream_http_clients()  # every deployment's calls share the pools
    clients = {
        deployment.name: _deployment_client(deployment, api_key(deployment, config), http_clients)
        for group in routing.groups.values()
        for deployment in group.deployments
    }
    breaker = routing.router.breaker
    breakers = Breakers.from_config(config, breaker.failures, breaker.cooldown_seconds)
    names = {name for name, group in routing.groups.items() for name in (name, *group.aliases)}
    default = config["OPENAI_MODEL"]
    if WILDCARD not in routing.groups and default not in names:
        default = next(iter(routing.groups))
    return Router(routing, clients, breakers, default)


def _deployment_client(deployment: Deployment, key: str | None, http_clients: list[Any]) -> OpenAIChat:
    """One deployment's client: the SDK's (with no retries of its own: the router's loop is
    the one), a copy of it per connection pool."""
    timeout = deployment.timeouts.first_token
    if deployment.provider == "azure":
        client: openai.OpenAI = openai.AzureOpenAI(
            azure_endpoint=deployment.base_url,
            api_key=key,
            api_version=deployment.api_version,
            timeout=timeout,
            max_retries=0,
            http_client=http_clients[0],
        )
    else:
        # Local OpenAI-compatible servers (Ollama, vLLM) accept any key but the SDK needs one.
        client = openai.OpenAI(
            api_key=key or "no-key-configured",
            base_url=deployment.base_url or "https://api.openai.com/v1",
            timeout=timeout,
            max_retries=0,
            http_client=http_clients[0],
        )
    pools = [client.copy(http_client=http_client) for http_client in http_clients[1:]]
    return OpenAIChat(client, (key,), pools=pools)
