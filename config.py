"""Settings read from the environment, with types converted and checked at start-up.

Every setting is documented in README.md and .env.example. A bad value stops the service
at start-up with a message naming the variable, never at the first request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from limits import parse_many


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


def read_yaml_file(path: str | Path, setting: str) -> Any:
    """The YAML file a setting names, parsed; ConfigError naming the setting if it is unusable."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{setting} {path} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{setting} {path} is not valid YAML: {exc}") from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _optional_bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    return _bool(env, name, False)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float | None, minimum: float = 0.0) -> float | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= minimum:
        raise ConfigError(f"{name} must be greater than {minimum}, got {value}")
    return value


def _str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


def load_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read every setting from `env` (default: os.environ) into typed Flask config keys."""
    env = os.environ if env is None else env
    app_env = (_str(env, "APP_ENV", "development") or "development").lower()
    if app_env not in {"development", "production", "testing"}:
        raise ConfigError(f"APP_ENV must be development, production or testing, got {app_env!r}")
    return {
        "APP_ENV": app_env,
        **_upstream_settings(env),
        **_service_settings(env),
        **_access_settings(env),
        **_compaction_settings(env),
    }


def _upstream_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The database and the LLM upstream."""
    return {
        # None means: SQLite at instance/chat_history.db, resolved by create_app.
        "SQLALCHEMY_DATABASE_URI": _str(env, "DATABASE_URL"),
        # None means: instance/<database name>.journal, resolved by create_app.
        "JOURNAL_PATH": _str(env, "JOURNAL_PATH"),
        # A thread holds at most one connection at a time (and none while the LLM
        # works), so one per gunicorn thread means no request ever waits for the pool.
        "DATABASE_POOL_SIZE": _int(env, "DATABASE_POOL_SIZE", _int(env, "GUNICORN_THREADS", 8, minimum=1), minimum=1),
        "OPENAI_API_KEY": _str(env, "OPENAI_API_KEY"),
        "OPENAI_BASE_URL": _str(env, "OPENAI_BASE_URL"),
        "OPENAI_MODEL": _str(env, "OPENAI_MODEL", "gpt-4o-mini"),
        # Comma-separated; empty means any model a client names is passed on.
        "ALLOWED_MODELS": [m.strip() for m in (_str(env, "ALLOWED_MODELS", "") or "").split(",") if m.strip()],
        "OPENAI_TIMEOUT": _float(env, "OPENAI_TIMEOUT", 60.0),
        "OPENAI_MAX_RETRIES": _int(env, "OPENAI_MAX_RETRIES", 2),
        "AZURE_OPENAI_ENDPOINT": _str(env, "AZURE_OPENAI_ENDPOINT"),
        "AZURE_OPENAI_API_KEY": _str(env, "AZURE_OPENAI_API_KEY"),
        "OPENAI_API_VERSION": _str(env, "OPENAI_API_VERSION", "2024-10-21"),
        "LLM_OFFLINE": _bool(env, "LLM_OFFLINE", False),
        # Several upstreams per model, failover, breakers: README "Routing". None: the
        # one OPENAI_* / AZURE_* upstream.
        "ROUTING_FILE": _str(env, "ROUTING_FILE"),
        "PRICES_FILE": _str(env, "PRICES_FILE"),
        # The whole upstream call, however many attempts it makes (until a stream's first token).
        "UPSTREAM_DEADLINE_SECONDS": _float(env, "UPSTREAM_DEADLINE_SECONDS", 90.0),
        # A stream silent this long mid-answer is stalled: continued elsewhere, or ended.
        "UPSTREAM_SILENCE_SECONDS": _float(env, "UPSTREAM_SILENCE_SECONDS", 20.0),
    }


def _service_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """History, request bounds, logs, retention and the sweeper."""
    return {
        "SYSTEM_PROMPT": _str(env, "SYSTEM_PROMPT", ""),
        "HISTORY_MAX_MESSAGES": _int(env, "HISTORY_MAX_MESSAGES", 50),
        "HISTORY_MAX_TOKENS": _int(env, "HISTORY_MAX_TOKENS", 3000),
        # Unset: a routed model whose group declares its context window gets that window less
        # the reply's cap instead of the 3000 default (services/turns.py).
        "HISTORY_MAX_TOKENS_SET": bool((env.get("HISTORY_MAX_TOKENS") or "").strip()),
        # The most estimated tokens one request may send, its history read no further (less
        # when every routed deployment declares a smaller context_window): one million, the
        # largest window of OpenAI's models, about 4 MB of text.
        "HISTORY_LOAD_MAX_TOKENS": _int(env, "HISTORY_LOAD_MAX_TOKENS", 1_048_576, minimum=1),
        # What one conversation may store (its messages' content and fields, as stored JSON):
        # the Conversations API adds no items past it.
        "CONVERSATION_MAX_BYTES": _int(env, "CONVERSATION_MAX_BYTES", 8 * 1024 * 1024, minimum=1),
        # What one page of a listing may hold (a conversation's rows or items, a response's
        # input items): a page that is full ends early, with the cursor of the next.
        "PAGE_MAX_BYTES": _int(env, "PAGE_MAX_BYTES", 4 * 1024 * 1024, minimum=1),
        "MAX_CONTENT_LENGTH": _int(env, "MAX_CONTENT_LENGTH", 1024 * 1024, minimum=1),
        "MAX_PROMPT_CHARS": _int(env, "MAX_PROMPT_CHARS", 32000, minimum=1),
        "MAX_JSON_DEPTH": _int(env, "MAX_JSON_DEPTH", 32, minimum=2),
        # Also refuse image URLs whose host is a private, loopback or link-local address
        # literal (http, https and data URLs are the only ones taken either way).
        "IMAGE_URLS_PUBLIC_ONLY": _bool(env, "IMAGE_URLS_PUBLIC_ONLY", False),
        # Completion tokens reserved from a key's daily budget for a request without max_tokens.
        "BUDGET_DEFAULT_MAX_TOKENS": _int(env, "BUDGET_DEFAULT_MAX_TOKENS", 1024, minimum=1),
        "LOG_LEVEL": (_str(env, "LOG_LEVEL", "INFO") or "INFO").upper(),
        "LOG_CONTENT": _bool(env, "LOG_CONTENT", False),
        "RETENTION_DAYS": _int(env, "RETENTION_DAYS", 90, minimum=1),
        # None: derived from the upstream call's deadline (see abandon_after_seconds).
        "ABANDON_AFTER_SECONDS": _float(env, "ABANDON_AFTER_SECONDS", None),
        # How often each gunicorn worker sweeps abandoned exchanges; 0: never (cron runs
        # `flask messages sweep` instead).
        "SWEEP_INTERVAL_SECONDS": _int(env, "SWEEP_INTERVAL_SECONDS", 60),
    }


def _access_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Rate limits, client keys, CORS and proxies."""
    return {
        "RATELIMIT_ENABLED": _bool(env, "RATELIMIT_ENABLED", True),
        # RATELIMIT_DEFAULT is one budget per client shared by every route, which is
        # what Flask-Limiter calls application limits (its own "default" is per route).
        # A client is often a whole team's front end (one key, or one address with keys
        # off): the defaults stop a runaway client within a minute, not a team's traffic.
        # Spend is bounded by each key's daily token budget, not by request counts.
        "RATELIMIT_APPLICATION": _str(env, "RATELIMIT_DEFAULT", "1200 per minute"),
        "RATELIMIT_COMPLETION": _str(env, "RATELIMIT_COMPLETION", "600 per minute"),
        # Failed API keys one address may present before it is answered 429 unlooked-up.
        "AUTH_FAILURE_LIMIT": _str(env, "AUTH_FAILURE_LIMIT", "20 per minute"),
        # How stale each process's set of live keys may be, which decides whether a key from
        # an address over that limit is looked up at all (auth.py, services/client_keys.py).
        "AUTH_KEY_REFRESH_SECONDS": _float(env, "AUTH_KEY_REFRESH_SECONDS", 10.0),
        "RATELIMIT_STORAGE_URI": _str(env, "RATELIMIT_STORAGE_URI", "memory://"),
        # Storage unreachable (Redis down): count the same limits in each process's memory
        # and go back to the storage when it answers, rather than failing every request.
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        # A Redis host that is gone (not merely refusing) would otherwise hold each request
        # for the operating system's connect timeout, minutes, before the fallback starts.
        "RATELIMIT_STORAGE_TIMEOUT": _float(env, "RATELIMIT_STORAGE_TIMEOUT", 1.0),
        # None: decided by APP_ENV once the configuration is complete (see resolve_defaults).
        "REQUIRE_API_KEY": _optional_bool(env, "REQUIRE_API_KEY"),
        # Origins a browser may call the API from; empty means no CORS headers at all.
        "CORS_ORIGINS": [o.strip() for o in (_str(env, "CORS_ORIGINS", "") or "").split(",") if o.strip()],
        # How many proxies in front of the service may set X-Forwarded-For.
        "TRUSTED_PROXIES": _int(env, "TRUSTED_PROXIES", 0),
        # Set: /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; unset: open.
        "METRICS_TOKEN": _str(env, "METRICS_TOKEN"),
        # The operator's console at /console (README "Console"): off unless CONSOLE_ENABLED.
        "CONSOLE_ENABLED": _bool(env, "CONSOLE_ENABLED", False),
        # Signs the console's session cookie and CSRF tokens; required when the console is on.
        "SECRET_KEY": _str(env, "SECRET_KEY"),
        # Failed console sign-ins one address may make before it is answered 429 unchecked.
        "CONSOLE_SIGN_IN_LIMIT": _str(env, "CONSOLE_SIGN_IN_LIMIT", "10 per minute"),
        # The session cookie is sent over HTTPS only (browsers count http://localhost as secure).
        "SESSION_COOKIE_SECURE": _bool(env, "CONSOLE_COOKIE_SECURE", True),
    }


# -- compaction (README "Compaction"; services/responses/compaction.py) -------------------------

MAKE_A_FERNET_KEY = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


def _compaction_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The Responses API's compaction: on or off, the keys its items are sealed with, how long
    an item stays readable, and the summary's cap."""
    return {
        # off: /v1/responses/compact, context_management and compaction items are refused.
        "COMPACTION": _bool(env, "COMPACTION", True),
        # Comma-separated Fernet keys: the first seals, every one opens (rotation).
        "COMPACTION_KEY": _str(env, "COMPACTION_KEY"),
        # A compaction item older than this is refused (0: never).
        "COMPACTION_MAX_AGE_DAYS": _int(env, "COMPACTION_MAX_AGE_DAYS", 30),
        "COMPACTION_SUMMARY_MAX_TOKENS": _int(env, "COMPACTION_SUMMARY_MAX_TOKENS", 2048, minimum=16),
        # Stored conversations (services/compactor.py): the model (or routing group) that writes
        # their summaries (unset: the conversation's own), the most estimated tokens one
        # summarising call reads, and how long it may take (seconds) before it is given up.
        # off: stored conversations are trimmed as before, never summarised (COMPACTION=off too).
        "COMPACTION_HISTORY": _bool(env, "COMPACTION_HISTORY", True),
        "COMPACTION_MODEL": _str(env, "COMPACTION_MODEL"),
        "COMPACTION_INPUT_MAX_TOKENS": _int(env, "COMPACTION_INPUT_MAX_TOKENS", 8192, minimum=256),
        "COMPACTION_TIMEOUT": _float(env, "COMPACTION_TIMEOUT", 60.0),
        "COMPACTION_RETRY_SECONDS": _float(env, "COMPACTION_RETRY_SECONDS", 300.0),
    }


def validate_compaction_settings(config: Mapping[str, Any]) -> None:
    """COMPACTION_KEY must be Fernet keys (never echoed); production needs one unless COMPACTION=off."""
    from cryptography.fernet import Fernet  # only where compaction is configured

    keys = [key.strip() for key in (config.get("COMPACTION_KEY") or "").split(",") if key.strip()]
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise ConfigError(
                f"COMPACTION_KEY's key {position} is not a Fernet key (32 url-safe base64-encoded bytes; "
                f"make one: {MAKE_A_FERNET_KEY})"
            ) from None
    if config.get("APP_ENV") == "production" and config.get("COMPACTION", True) and not keys:
        raise ConfigError(f"APP_ENV=production needs COMPACTION_KEY (make one: {MAKE_A_FERNET_KEY}) or COMPACTION=off")


# On top of the longest call: clock skew between hosts, recording the reply, a slow pool.
ABANDON_MARGIN_SECONDS = 60.0


def abandon_after_seconds(config: Mapping[str, Any]) -> float:
    """How long an exchange can be in flight at most: the router's deadline for the whole
    call (every attempt and wait inside it; a stream's rows are heartbeated once it
    answers), and a margin. A `pending` exchange older than this (and not heartbeated
    since) has lost its process."""
    return config["UPSTREAM_DEADLINE_SECONDS"] + ABANDON_MARGIN_SECONDS


def resolve_defaults(config: dict[str, Any]) -> None:
    """Fill the settings whose default depends on others: REQUIRE_API_KEY follows APP_ENV,
    the rate limit storage's socket options follow RATELIMIT_STORAGE_TIMEOUT,
    ABANDON_AFTER_SECONDS the upstream call's deadline."""
    if config.get("ABANDON_AFTER_SECONDS") is None:
        config["ABANDON_AFTER_SECONDS"] = abandon_after_seconds(config)
    if config.get("REQUIRE_API_KEY") is None:
        config["REQUIRE_API_KEY"] = config.get("APP_ENV") == "production"
    # Flask-Limiter hands these to redis-py (options in the URI's query string win); memory:// ignores them.
    timeout = config.get("RATELIMIT_STORAGE_TIMEOUT")
    if timeout:
        config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": timeout, "socket_timeout": timeout})


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")
# RFC 6750's token characters, and long enough not to be guessed.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,}")


def is_rate_limit(text: str | None) -> bool:
    """True when `text` is a rate limit Flask-Limiter understands ("10 per minute", "1/second;50/hour")."""
    try:
        return bool(text) and bool(parse_many(text))
    except ValueError:
        return False


def validate_settings(config: Mapping[str, Any]) -> None:
    """Check the merged configuration as a whole; raise ConfigError on the first problem."""
    for name in ("RATELIMIT_APPLICATION", "RATELIMIT_COMPLETION", "AUTH_FAILURE_LIMIT"):
        value = config.get(name)
        env_name = "RATELIMIT_DEFAULT" if name == "RATELIMIT_APPLICATION" else name
        if not is_rate_limit(value):
            raise ConfigError(
                f"{env_name} must be a rate limit such as '10 per minute' or '200 per day;50 per hour', got {value!r}"
            )
    for origin in config.get("CORS_ORIGINS") or []:
        if origin != "*" and not _ORIGIN.match(origin):
            raise ConfigError(
                f"CORS_ORIGINS must be '*' or origins such as https://app.example.com (no path), got {origin!r}"
            )
    token = config.get("METRICS_TOKEN")
    if token is not None and not _BEARER_TOKEN.fullmatch(token):
        # Never echoed: it is a secret, however weak.
        raise ConfigError(
            "METRICS_TOKEN must be at least 16 characters of A-Z a-z 0-9 . _ ~ + / = - (openssl rand -hex 32)"
        )
    storage = config.get("RATELIMIT_STORAGE_URI") or ""
    if not storage.startswith(("memory://", "redis://", "rediss://", "redis+unix://")):
        raise ConfigError(f"RATELIMIT_STORAGE_URI must be memory:// or redis://..., got {storage!r}")
    if config.get("AZURE_OPENAI_ENDPOINT") and not config.get("AZURE_OPENAI_API_KEY") and not config.get("LLM_OFFLINE"):
        raise ConfigError("AZURE_OPENAI_ENDPOINT is set but AZURE_OPENAI_API_KEY is missing")
    if config.get("APP_ENV") == "production" and uses_offline_model(config) and not config.get("LLM_OFFLINE"):
        raise ConfigError(
            "APP_ENV=production needs OPENAI_API_KEY (or OPENAI_BASE_URL, or AZURE_OPENAI_ENDPOINT); "
            "set LLM_OFFLINE=true to serve the built-in offline model on purpose"
        )
    validate_console_settings(config)
    validate_compaction_settings(config)


# A production SECRET_KEY this short could be guessed offline from one signed cookie.
MIN_SECRET_KEY_LENGTH = 32


def validate_console_settings(config: Mapping[str, Any]) -> None:
    """The console needs a SECRET_KEY (a long one in production) and a sign-in limit."""
    if not config.get("CONSOLE_ENABLED"):
        return
    secret = config.get("SECRET_KEY") or ""
    if not secret:
        raise ConfigError(
            "CONSOLE_ENABLED=true needs SECRET_KEY (make one: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    if config.get("APP_ENV") == "production" and len(secret) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(f"SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters in production")
    limit = config.get("CONSOLE_SIGN_IN_LIMIT")
    if not is_rate_limit(limit):
        raise ConfigError(f"CONSOLE_SIGN_IN_LIMIT must be a rate limit such as '10 per minute', got {limit!r}")


def uses_offline_model(config: Mapping[str, Any]) -> bool:
    """True when requests are answered by the built-in offline model, not an upstream."""
    if config.get("LLM_OFFLINE"):
        return True
    return not (
        config.get("ROUTING_FILE")
        or config.get("OPENAI_API_KEY")
        or config.get("OPENAI_BASE_URL")
        or config.get("AZURE_OPENAI_ENDPOINT")
    )
