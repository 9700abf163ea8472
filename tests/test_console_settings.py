"""The console's settings page (issue 25): every setting of config.py with its value and
its source, and the routing in force, with no secret on the page: the masking rule is
deny-by-default (secret-looking names, passwords in URLs, any known secret value)."""

from __future__ import annotations

import re

import pytest
import yaml
from console_support import SECRET_KEY
from support import COMPACTION_KEY, UPSTREAM_KEY
from test_console import PASSWORD, make_admin, signed_in

from config import load_settings
from services.console.settings import MASK, effective_settings, known_secrets, looks_secret, mask_url, masked

CONSOLE = {"CONSOLE_ENABLED": True, "SECRET_KEY": SECRET_KEY}
METRICS_TOKEN = "metrics-" + "m" * 24
DB_PASSWORD = "dbpass-" + "d" * 12
REDIS_PASSWORD = "redispass-" + "r" * 12


def _value(html: str, name: str) -> str:
    match = re.search(rf'<tr class="setting" data-name="{name}">.*?<td class="value[^"]*">(.*?)</td>', html, re.S)
    assert match, f"no row for {name}"
    return match.group(1)


def _source(html: str, name: str) -> str:
    match = re.search(rf'<tr class="setting" data-name="{name}">.*?<td class="source">(.*?)</td>', html, re.S)
    assert match, f"no row for {name}"
    return match.group(1)


def test_every_setting_is_shown_with_its_source_and_no_secret_is(make_app, monkeypatch):
    monkeypatch.setenv("HISTORY_MAX_MESSAGES", "77")
    monkeypatch.setenv("SOME_VENDOR_API_KEY", "vendor-" + "v" * 20)  # not a setting, but a secret all the same
    app = make_app(**CONSOLE, METRICS_TOKEN=METRICS_TOKEN)
    # What the page shows is the configuration in force: URLs with passwords in them.
    app.config["SQLALCHEMY_DATABASE_URI"] = f"postgresql+psycopg://gateway:{DB_PASSWORD}@db.internal:5432/gateway"
    app.config["RATELIMIT_STORAGE_URI"] = f"redis://:{REDIS_PASSWORD}@cache.internal:6379/0"
    app.config["CORS_ORIGINS"] = ["https://app.example.com"]
    make_admin(app)
    page = signed_in(app).get("/console/settings")
    assert page.status_code == 200
    html = page.text
    for name in load_settings({}):
        assert f'data-name="{name}"' in html, name
    secrets = [UPSTREAM_KEY, SECRET_KEY, COMPACTION_KEY, METRICS_TOKEN, DB_PASSWORD, REDIS_PASSWORD, PASSWORD]
    for secret in secrets:
        assert secret not in html
    for name in ("OPENAI_API_KEY", "SECRET_KEY", "COMPACTION_KEY", "METRICS_TOKEN"):
        assert _value(html, name) == f"<code>{MASK}</code>", name
    assert _value(html, "AZURE_OPENAI_API_KEY") == "<em>not set</em>"
    assert f"postgresql+psycopg://gateway:{MASK}@db.internal:5432/gateway" in _value(html, "SQLALCHEMY_DATABASE_URI")
    assert f"redis://:{MASK}@cache.internal:6379/0" in _value(html, "RATELIMIT_STORAGE_URI")
    assert "https://app.example.com" in _value(html, "CORS_ORIGINS")
    assert _value(html, "HISTORY_MAX_MESSAGES") == "<code>77</code>"
    assert _source(html, "HISTORY_MAX_MESSAGES").startswith("environment (HISTORY_MAX_MESSAGES")
    assert _source(html, "PAGE_MAX_BYTES") == "default"
    assert _source(html, "RATELIMIT_ENABLED").startswith("set at start-up")  # the tests' create_app(config)
    assert _source(html, "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED") == "fixed in config.py"
    assert _value(html, "REQUIRE_API_KEY") == "<code>False</code>"  # a flag, known to hold no secret


def test_the_routing_in_force_is_shown_with_key_variables_named_and_keys_never(make_app, tmp_path, monkeypatch):
    key_a, key_b = "sk-" + "routed-a" * 4, "sk-" + "routed-b" * 4
    monkeypatch.setenv("UPSTREAM_A_KEY", key_a)
    monkeypatch.setenv("UPSTREAM_B_KEY", key_b)
    routing = {
        "groups": {
            "fast": {
                "deployments": [
                    {"name": "a", "provider": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
                     "api_key_env": "UPSTREAM_A_KEY", "model": "m-a"},
                    {"name": "b", "provider": "openai_compatible", "base_url": "http://proxy:hunter2-proxy@127.0.0.1:9/v1",
                     "api_key_env": "UPSTREAM_B_KEY", "model": "m-b",
                     "prefill_extra_body": {"vendor": {"apiKey": "body-secret-123456"}, "echo": key_a}},
                ]
            }
        }
    }  # fmt: skip
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(routing))
    app = make_app(**CONSOLE, ROUTING_FILE=str(path))
    make_admin(app)
    html = signed_in(app).get("/console/settings").text
    for secret in (key_a, key_b, "hunter2-proxy", "body-secret-123456"):
        assert secret not in html
    assert "UPSTREAM_A_KEY (set; value masked)" in html and "UPSTREAM_B_KEY (set; value masked)" in html
    assert f"http://proxy:{MASK}@127.0.0.1:9/v1" in html
    assert f"apiKey: {MASK}" in html and f"echo: {MASK}" in html  # a key by name, a key by value
    assert "model: m-a" in html and str(path) in html
    assert "first_token: 60.0" in html  # a timeout, known to hold no secret


@pytest.mark.parametrize(
    "name", ["OPENAI_API_KEY", "SECRET_KEY", "COMPACTION_KEY", "METRICS_TOKEN", "ADMIN_PASSWORD", "apiKey",
             "NEW_VENDOR_SECRET", "db_passwd", "x-api-key", "SESSION_SIGNING_SALT", "ACCESS_TOKEN"]
)  # fmt: skip
def test_a_secret_looking_name_is_masked_whatever_it_holds(name):
    assert looks_secret(name)
    assert masked(name, "plain words", frozenset()) == MASK
    assert masked(name, None, frozenset()) is None  # "not set" is no secret


@pytest.mark.parametrize(
    "name",
    ["HISTORY_MAX_TOKENS", "AUTH_KEY_REFRESH_SECONDS", "REQUIRE_API_KEY", "OPENAI_MODEL", "KEYBOARD", "first_token"],
)
def test_names_without_a_secret_word_or_known_to_hold_none_are_shown(name):
    assert not looks_secret(name)


def test_passwords_and_secret_parameters_in_urls_are_masked_and_known_secrets_anywhere():
    assert mask_url("postgresql://u:p4ss@h/db") == f"postgresql://u:{MASK}@h/db"
    assert mask_url("rediss://:p4ss@h:6380/1?ssl_cert_reqs=none") == f"rediss://:{MASK}@h:6380/1?ssl_cert_reqs=none"
    assert mask_url("https://tok3n@h/v1") == f"https://{MASK}@h/v1"
    assert "s3cret" not in mask_url("https://h/v1?api-key=s3cret&api-version=1")
    # A password may hold , ; and ' unencoded (RFC 3986; SQLAlchemy and redis-py read them).
    for url in ("postgresql://gw:s3cr,et@db:5432/gw", "redis://:red;pass@r:6379/0", "postgresql://gw:it's@db/gw"):
        shown = masked("DATABASE_URL", url, frozenset())
        assert MASK in shown and not any(part in shown for part in ("s3cr", "red;", "it's")), shown
    assert masked("SYSTEM_PROMPT", "connect to sqlite:///x and mysql://a:b@c/d", frozenset()).endswith(
        f"mysql://a:{MASK}@c/d"
    )
    secrets = known_secrets({"OPENAI_API_KEY": "sk-abcdefgh", "COMPACTION_KEY": "first-key1,second-key2"}, {})
    assert {"sk-abcdefgh", "first-key1", "second-key2"} <= secrets
    assert masked("SYSTEM_PROMPT", "you may use second-key2", secrets) == MASK
    assert masked("ALLOWED_MODELS", ["gpt-4o", "sk-abcdefgh"], secrets) == ["gpt-4o", MASK]


def test_effective_settings_reads_sources_from_the_environment_given():
    env = {"HISTORY_MAX_MESSAGES": "9", "DATABASE_URL": "sqlite:///x.db"}
    config = {**load_settings(env), "RETENTION_DAYS": 5}
    rows = {row["name"]: row for row in effective_settings(config, env)}
    assert rows["HISTORY_MAX_MESSAGES"]["source"].startswith("environment")
    assert rows["SQLALCHEMY_DATABASE_URI"]["env"] == "DATABASE_URL"
    assert rows["SQLALCHEMY_DATABASE_URI"]["source"].startswith("environment (DATABASE_URL")
    assert rows["RETENTION_DAYS"]["source"].startswith("set at start-up")
    assert rows["LOG_LEVEL"]["source"] == "default"
