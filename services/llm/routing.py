"""The routing table: which deployments serve which model names, and how hard to try.

Read from the YAML file named by ROUTING_FILE (PyYAML, validated by the pydantic models
below: a bad file stops start-up with the field's path named), or, without one, made
from the OPENAI_* / AZURE_* settings: one wildcard group of one deployment, `default`,
which serves any model name the client asks for, as the service always did.
README.md ("Routing") documents every field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from config import ConfigError, read_yaml_file
from services.prices import Price

# The group of the configuration without a routing file: any model name is its own.
WILDCARD = "*"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Seconds an attempt may take: to connect, to the first token (a whole reply, when not
    streamed), between two chunks of a stream, and in all."""

    connect: float = Field(10.0, gt=0)
    first_token: float = Field(60.0, gt=0)
    silence: float = Field(20.0, gt=0)
    total: float = Field(600.0, gt=0)


class Capabilities(_Strict):
    """What a deployment accepts; a request that needs what it lacks goes elsewhere."""

    tools: bool = True
    images: bool = True
    json_schema: bool = True
    # The request may end with the assistant's partial answer, which the model continues.
    prefill: bool = False


class Deployment(_Strict):
    """One upstream that serves a group: where it is, its key's variable, its model and limits."""

    name: str = Field(min_length=1, max_length=100)
    provider: Literal["openai", "azure", "openai_compatible"] = "openai"
    base_url: str | None = None
    # The NAME of the environment variable that holds the key, never the key itself.
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_version: str = "2024-10-21"
    model: str = Field(min_length=1)
    weight: float = Field(1.0, gt=0)
    priority: int = Field(1, ge=0)
    context_window: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    capabilities: Capabilities = Capabilities()
    prefill_extra_body: dict[str, Any] = Field(default_factory=dict)
    continuation_instruction: str | None = None
    timeouts: Timeouts = Timeouts()
    max_in_flight: int | None = Field(None, gt=0)
    # What its tokens cost (USD per million), over the group's and the price table's.
    price: Price | None = None

    @model_validator(mode="after")
    def _endpoint_known(self) -> Deployment:
        if self.provider != "openai" and not self.base_url:
            raise ValueError(f"base_url is required for provider {self.provider}")
        return self

    @property
    def continues(self) -> bool:
        """True when a stream cut elsewhere can be continued here (prefill or instruction)."""
        return self.capabilities.prefill or bool(self.continuation_instruction)


class Group(_Strict):
    """A client-visible model name: its aliases, deployments, strategy and fallbacks."""

    aliases: list[str] = Field(default_factory=list)
    strategy: Literal["priority", "weighted", "least_busy"] = "priority"
    deployments: list[Deployment] = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)
    context_window_fallbacks: list[str] = Field(default_factory=list)
    # What its deployments' tokens cost (USD per million) unless a deployment says.
    price: Price | None = None


class Breaker(_Strict):
    failures: int = Field(3, ge=1)
    cooldown_seconds: float = Field(15.0, gt=0)
    auth_cooldown_seconds: float = Field(300.0, gt=0)


class RouterSettings(_Strict):
    """How hard one call tries, however many deployments it has."""

    deadline_seconds: float = Field(90.0, gt=0)
    max_attempts: int = Field(6, ge=1)
    retries_per_deployment: int = Field(1, ge=0)
    backoff_seconds: float = Field(0.5, ge=0)
    max_backoff_seconds: float = Field(4.0, ge=0)
    max_retry_after_seconds: float = Field(10.0, ge=0)
    breaker: Breaker = Breaker()


class RoutingFile(_Strict):
    router: RouterSettings = RouterSettings()
    groups: dict[str, Group] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_resolve(self) -> RoutingFile:
        names: dict[str, str] = {}
        for group_name, group in self.groups.items():
            for name in (group_name, *group.aliases):
                if name in names:
                    raise ValueError(f"model name {name!r} is used by groups {names[name]!r} and {group_name!r}")
                names[name] = group_name
            for other in (*group.fallbacks, *group.context_window_fallbacks):
                if other not in self.groups:
                    raise ValueError(f"group {group_name!r} falls back to {other!r}, which is no group")
        deployments = [d.name for g in self.groups.values() for d in g.deployments]
        repeated = sorted({d for d in deployments if deployments.count(d) > 1})
        if repeated:
            raise ValueError(f"deployment names must be unique; repeated: {', '.join(repeated)}")
        return self


def load_routing(config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> RoutingFile:
    """The routing table of the configuration: its ROUTING_FILE's, else the one-upstream one.

    Raises ConfigError naming the file and the field for a file that cannot be used,
    and the variable for a deployment whose key variable is unset.
    """
    env = os.environ if env is None else env
    path = config.get("ROUTING_FILE")
    routing = _read_file(path, config) if path else single_upstream(config)
    for group in routing.groups.values():
        for deployment in group.deployments:
            if deployment.api_key_env and not env.get(deployment.api_key_env):
                raise ConfigError(
                    f"ROUTING_FILE {path}: deployment {deployment.name!r} takes its key from "
                    f"{deployment.api_key_env}, which is not set"
                )
    return routing


def _read_file(path: str, config: Mapping[str, Any]) -> RoutingFile:
    raw = read_yaml_file(path, "ROUTING_FILE")
    if not isinstance(raw, dict):
        raise ConfigError(f"ROUTING_FILE {path} must hold a mapping with `groups`")
    raw.setdefault("router", {})
    if isinstance(raw["router"], dict):
        raw["router"].setdefault("deadline_seconds", config.get("UPSTREAM_DEADLINE_SECONDS", 90.0))
    try:
        return RoutingFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{_path(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise ConfigError(f"ROUTING_FILE {path} is invalid: {problems}") from None


def _path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a field path: groups.gpt-4o.deployments[0].model."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(the file)"


def single_upstream(config: Mapping[str, Any]) -> RoutingFile:
    """The routing of a configuration without a routing file: one wildcard group whose one
    deployment is the OPENAI_* (or AZURE_*) upstream; its retries are OPENAI_MAX_RETRIES."""
    timeout = config["OPENAI_TIMEOUT"]
    azure = bool(config.get("AZURE_OPENAI_ENDPOINT"))
    deployment = Deployment(
        name="default",
        provider="azure" if azure else "openai",
        base_url=config.get("AZURE_OPENAI_ENDPOINT") if azure else config.get("OPENAI_BASE_URL"),
        api_version=config.get("OPENAI_API_VERSION") or "2024-10-21",
        model=config["OPENAI_MODEL"],
        timeouts=Timeouts(
            connect=min(10.0, timeout),
            first_token=timeout,
            silence=min(timeout, config.get("UPSTREAM_SILENCE_SECONDS", 20.0)),
            total=max(600.0, timeout),
        ),
    )
    settings = RouterSettings(
        deadline_seconds=config.get("UPSTREAM_DEADLINE_SECONDS", 90.0),
        retries_per_deployment=config["OPENAI_MAX_RETRIES"],
        max_attempts=config["OPENAI_MAX_RETRIES"] + 1,
    )
    return RoutingFile(router=settings, groups={WILDCARD: Group(deployments=[deployment])})


def api_key(deployment: Deployment, config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str | None:
    """The deployment's key: its variable's value; for the one-upstream configuration, the
    OPENAI_API_KEY or AZURE_OPENAI_API_KEY setting."""
    env = os.environ if env is None else env
    if deployment.api_key_env:
        return env.get(deployment.api_key_env)
    if config.get("ROUTING_FILE"):
        return None
    return config.get("AZURE_OPENAI_API_KEY") if deployment.provider == "azure" else config.get("OPENAI_API_KEY")
