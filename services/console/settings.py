"""The console's settings page: the effective configuration, every setting of config.py
with its value and where it came from, and the routing in force, with every secret masked.

Masking is deny-by-default: a setting (or a routing field) whose name has a secret-looking
word in it (KEY, SECRET, TOKEN, PASSWORD...) is masked whatever it holds, unless it is one
of the few names known to hold no secret (NOT_SECRET); a password (or a secret-looking query
parameter) inside a URL is masked wherever a URL appears; and any text that still contains
a known secret value (each masked setting's value, each upstream key the routing reads from
the environment, each environment variable with a secret-looking name) is masked whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import yaml

from config import ConfigError, load_settings

MASK = "••••••"
# Words (between underscores, any case) that make a name look secret.
SECRET_WORDS = frozenset(
    {"KEY", "KEYS", "SECRET", "SECRETS", "TOKEN", "PASSWORD", "PASSWD", "PWD", "PASS", "CREDENTIAL", "CREDENTIALS",
     "PRIVATE", "AUTHORIZATION", "BEARER", "SIGNATURE", "SALT", "COOKIE", "SESSION", "APIKEY"}
)  # fmt: skip
# Names with such a word that hold no secret (a number, a flag, a variable's name).
NOT_SECRET = frozenset(
    {"AUTH_KEY_REFRESH_SECONDS", "REQUIRE_API_KEY", "SESSION_COOKIE_SECURE", "api_key_env", "first_token"}
)
# Settings whose environment variable has another name; None: not read from the environment.
ENV_NAMES: dict[str, str | None] = {
    "SQLALCHEMY_DATABASE_URI": "DATABASE_URL",
    "RATELIMIT_APPLICATION": "RATELIMIT_DEFAULT",
    "SESSION_COOKIE_SECURE": "CONSOLE_COOKIE_SECURE",
    "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": None,
}
# A URL in a text: its user and password (anything up to the last "@" before the host, which
# may hold , ; ' as RFC 3986 allows and database drivers read) and then the rest.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^\s/?#]*@)?[^\s,;\"'<>]+")


def looks_secret(name: str) -> bool:
    """True when the name has a secret-looking word and is not known to hold no secret."""
    if name in NOT_SECRET:
        return False
    words = re.split(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])", name)
    return any(word.upper() in SECRET_WORDS for word in words)


def mask_url(url: str) -> str:
    """The URL with its password, and any secret-looking query parameter, masked."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
        query = "&".join(_masked_parameter(part) for part in parts.query.split("&")) if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return MASK  # a URL that does not parse is not shown at all


def _masked_parameter(part: str) -> str:
    name, equals, _ = part.partition("=")
    return f"{name}={MASK}" if equals and looks_secret(unquote_plus(name)) else part


def masked(name: str, value: Any, secrets: frozenset[str]) -> Any:
    """`value` as the page may show it (see the module's docstring); structures recursively."""
    if looks_secret(name):
        return MASK if value not in (None, "", [], {}) else value
    if isinstance(value, Mapping):
        return {key: masked(str(key), item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [masked(name, item, secrets) for item in value]
    if isinstance(value, str):
        one_url = "://" in value and not any(c.isspace() for c in value.strip())  # parsed whole
        text = mask_url(value.strip()) if one_url else _URL.sub(lambda match: mask_url(match.group(0)), value)
        return MASK if any(secret in text for secret in secrets) else text
    return value


def known_secrets(config: Mapping[str, Any], env: Mapping[str, str], routing: Any = None) -> frozenset[str]:
    """Every secret value the page could meet: secret-named settings and environment
    variables (each comma-separated part too), and the routing's upstream keys."""
    values: set[str] = set()
    named = [v for k, v in config.items() if looks_secret(k)] + [v for k, v in env.items() if looks_secret(k)]
    if routing is not None:
        named += [env.get(d.api_key_env) for g in routing.groups.values() for d in g.deployments if d.api_key_env]
    for value in named:
        if isinstance(value, str):
            values.update(part.strip() for part in (value, *value.split(",")) if len(part.strip()) >= 6)
    return frozenset(values)


def effective_settings(config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Every setting config.py reads, in its order: name, environment variable, the value in
    force (masked), whether it was masked, and where it came from."""
    env = os.environ if env is None else env
    defaults = load_settings({})
    try:
        from_env = load_settings(env)
    except ConfigError:  # the environment changed since start-up: no claim about it
        from_env = {}
    secrets = known_secrets(config, env)
    rows = []
    for name, default in defaults.items():
        env_name = ENV_NAMES.get(name, name)
        value = config.get(name)
        shown = masked(name, value, secrets)
        rows.append(
            {
                "name": name,
                "env": env_name,
                "value": shown,
                "masked": shown != value,
                "source": _source(name, env_name, value, default, env, from_env),
            }
        )
    return rows


def _source(name: str, env_name: str | None, value: Any, default: Any, env: Mapping, from_env: Mapping) -> str:
    if env_name is None:
        return "fixed in config.py"
    if (env.get(env_name) or "").strip() and name in from_env and from_env[name] == value:
        return f"environment ({env_name}; .env included)"
    if value == default:
        return "default"
    return "set at start-up (derived from other settings, or given to create_app)"


def routing_in_force(llm: Any, config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str | None:
    """The routing the process routes by, masked, as routing-file YAML (None for the offline model). A
    deployment's `api_key_env` is the NAME of the variable holding its key: shown, with
    whether it is set; the key itself never."""
    env = os.environ if env is None else env
    routing = getattr(llm, "routing", None)
    if routing is None:
        return None
    secrets = known_secrets(config, env, routing)
    dumped = masked("routing", routing.model_dump(mode="json"), secrets)
    for group in dumped.get("groups", {}).values():
        for deployment in group.get("deployments", []):
            variable = deployment.get("api_key_env")
            if variable:
                deployment["api_key_env"] = f"{variable} ({'set' if env.get(variable) else 'not set'}; value masked)"
    return yaml.safe_dump(dumped, sort_keys=False, allow_unicode=True)
