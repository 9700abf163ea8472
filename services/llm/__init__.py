"""The LLM behind the service: OpenAI, Azure OpenAI, any OpenAI-compatible server, or offline.

One client per process, built by `build_llm` in create_app and kept in
app.extensions["llm"]. Its rooms: `types` (what a call gives back), `errors` (how a call
fails, as the service answers it), `openai_client` and `offline` (the two clients),
`http_pool` (the connection pools the calls go through), `sse_reader` (a streamed
completion's body read as chunks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import openai

from config import uses_offline_model
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
from services.llm.types import ChatStream, Completion

__all__ = [
    "OFFLINE_MODEL",
    "ChatStream",
    "Completion",
    "OfflineChat",
    "OpenAIChat",
    "UpstreamAuthFailed",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "build_llm",
]


def build_llm(config: Mapping[str, Any]) -> OpenAIChat | OfflineChat:
    """The process's one LLM client, chosen by the configuration."""
    if uses_offline_model(config):
        return OfflineChat()
    timeout = config["OPENAI_TIMEOUT"]
    retries = config["OPENAI_MAX_RETRIES"]
    http_clients = upstream_http_clients()
    if config.get("AZURE_OPENAI_ENDPOINT"):
        client: openai.OpenAI = openai.AzureOpenAI(
            azure_endpoint=config["AZURE_OPENAI_ENDPOINT"],
            api_key=config["AZURE_OPENAI_API_KEY"],
            api_version=config["OPENAI_API_VERSION"],
            timeout=timeout,
            max_retries=retries,
            http_client=http_clients[0],
        )
        secrets = (config["AZURE_OPENAI_API_KEY"],)
    else:
        # Local OpenAI-compatible servers (Ollama, vLLM) accept any key but the SDK needs one.
        client = openai.OpenAI(
            api_key=config.get("OPENAI_API_KEY") or "no-key-configured",
            base_url=config.get("OPENAI_BASE_URL") or None,
            timeout=timeout,
            max_retries=retries,
            http_client=http_clients[0],
        )
        secrets = (config.get("OPENAI_API_KEY"),)
    pools = [client.copy(http_client=http_client) for http_client in http_clients[1:]]
    return OpenAIChat(client, config["OPENAI_MODEL"], secrets, pools=pools)
