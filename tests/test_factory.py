"""The factory and its settings: defaults, bad values, offline mode, Azure."""

from __future__ import annotations

import logging

import openai
import pytest
from support import COMPACTION_KEY, UPSTREAM_KEY, rows_of

from app import create_app
from config import ConfigError, load_settings, validate_settings


def test_testing_config_is_applied(app):
    assert app.config["TESTING"] is True
    assert app.config["APP_ENV"] == "testing"


def test_defaults_from_an_empty_environment():
    settings = load_settings({})
    assert settings["SQLALCHEMY_DATABASE_URI"] is None  # resolved to instance/chat_history.db
    assert settings["OPENAI_TIMEOUT"] == 60.0
    assert settings["OPENAI_MAX_RETRIES"] == 2
    assert settings["MAX_CONTENT_LENGTH"] == 1024 * 1024
    assert settings["RATELIMIT_APPLICATION"] == "1200 per minute"
    assert settings["RATELIMIT_COMPLETION"] == "600 per minute"
    assert settings["RATELIMIT_STORAGE_URI"] == "memory://"
    assert settings["RATELIMIT_ENABLED"] is True
    assert settings["RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"] is True  # Redis down: count per process
    assert settings["RATELIMIT_STORAGE_TIMEOUT"] == 1.0


def test_default_database_is_sqlite_in_the_instance_folder(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    app = create_app({"APP_ENV": "testing", "LLM_OFFLINE": True, "SQLALCHEMY_DATABASE_URI": None})
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("/instance/chat_history.db")
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OPENAI_TIMEOUT": "soon"}, "OPENAI_TIMEOUT must be a number, got 'soon'"),
        ({"OPENAI_MAX_RETRIES": "-1"}, "OPENAI_MAX_RETRIES must be at least 0, got -1"),
        ({"RATELIMIT_ENABLED": "maybe"}, "RATELIMIT_ENABLED must be true or false, got 'maybe'"),
        ({"HISTORY_MAX_MESSAGES": "many"}, "HISTORY_MAX_MESSAGES must be a whole number, got 'many'"),
        ({"APP_ENV": "staging"}, "APP_ENV must be development, production or testing, got 'staging'"),
        ({"REQUIRE_API_KEY": "sometimes"}, "REQUIRE_API_KEY must be true or false, got 'sometimes'"),
        ({"RATELIMIT_STORAGE_TIMEOUT": "0"}, "RATELIMIT_STORAGE_TIMEOUT must be greater than 0.0, got 0.0"),
    ],
)
def test_bad_values_fail_at_start_up_naming_the_variable(env, message):
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env)
    assert str(excinfo.value) == message


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"RATELIMIT_APPLICATION": "lots"}, "RATELIMIT_DEFAULT must be a rate limit"),
        ({"RATELIMIT_COMPLETION": "10 per fortnight"}, "RATELIMIT_COMPLETION must be a rate limit"),
        ({"RATELIMIT_STORAGE_URI": "mongodb://x"}, "RATELIMIT_STORAGE_URI must be memory:// or redis://"),
        ({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"}, "AZURE_OPENAI_API_KEY is missing"),
        ({"CORS_ORIGINS": ["https://app.example.com/path"]}, "CORS_ORIGINS must be '\\*' or origins"),
        ({"CORS_ORIGINS": ["app.example.com"]}, "CORS_ORIGINS must be"),
    ],
)
def test_inconsistent_settings_fail_at_start_up(overrides, fragment):
    settings = load_settings({})
    settings.update(overrides)
    with pytest.raises(ConfigError, match=fragment):
        validate_settings(settings)


def test_production_without_a_key_refuses_to_start():
    with pytest.raises(ConfigError, match="APP_ENV=production needs OPENAI_API_KEY"):
        create_app({"APP_ENV": "production", "OPENAI_API_KEY": None, "OPENAI_BASE_URL": None, "LLM_OFFLINE": False})


def test_production_may_run_offline_when_asked_explicitly(tmp_path):
    app = create_app(
        {
            "APP_ENV": "production",
            "OPENAI_API_KEY": None,
            "LLM_OFFLINE": True,
            "COMPACTION_KEY": COMPACTION_KEY,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.db'}",
        }
    )
    assert app.extensions["llm"].offline is True


def test_offline_model_serves_end_to_end_and_is_announced(make_app, upstream, caplog):
    with caplog.at_level(logging.WARNING):
        app = make_app(OPENAI_API_KEY=None, OPENAI_BASE_URL=None)
    assert "built-in offline model" in caplog.text
    client = app.test_client()

    first = client.post("/openai-completion", json={"prompt": "hello", "user_id": "off-1"}).get_json()
    second = client.post("/openai-completion", json={"prompt": "again", "user_id": "off-1"}).get_json()
    again = make_app(OPENAI_API_KEY=None, OPENAI_BASE_URL=None).test_client()
    payload = again.post(
        "/process-payload/", json={"user_id": "off-2", "messages": [{"role": "user", "content": "hello"}]}
    ).get_json()

    assert first["model"] == "offline"
    assert (
        first["completion"] == "[offline model] You said: 'hello'. I received 0 earlier messages of this conversation."
    )
    assert (
        second["completion"] == "[offline model] You said: 'again'. I received 2 earlier messages of this conversation."
    )
    assert payload["content"] == first["completion"]  # deterministic
    assert first["usage"]["total_tokens"] == first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert [r["model"] for r in rows_of(app, "off-1") if r["role"] == "assistant"] == ["offline", "offline"]
    assert upstream.received == []


def test_base_url_alone_selects_an_openai_compatible_server(make_app, upstream):
    # Ollama and vLLM need no key: pointing OPENAI_BASE_URL at one is enough.
    app = make_app(OPENAI_API_KEY=None)
    response = app.test_client().post("/openai-completion", json={"prompt": "local"})
    assert response.status_code == 200
    assert response.get_json()["completion"] == "echo: local"


def test_azure_endpoint_uses_the_azure_client_and_deployment(make_app, upstream):
    endpoint = f"http://127.0.0.1:{upstream.port}"
    app = make_app(
        OPENAI_API_KEY=None,
        OPENAI_BASE_URL=None,
        AZURE_OPENAI_ENDPOINT=endpoint,
        AZURE_OPENAI_API_KEY=UPSTREAM_KEY,
        OPENAI_API_VERSION="2024-10-21",
        OPENAI_MODEL="my-deployment",
    )
    [deployment] = app.extensions["llm"].pool.deployments()
    assert isinstance(deployment.chat.client, openai.AzureOpenAI)

    response = app.test_client().post("/openai-completion", json={"prompt": "hi azure"})

    assert response.status_code == 200
    assert response.get_json()["completion"] == "echo: hi azure"
    request = upstream.received[0]
    assert request.path == "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    assert request.headers["api-key"] == UPSTREAM_KEY


def test_access_settings_are_read_from_the_environment():
    settings = load_settings({"REQUIRE_API_KEY": "yes", "CORS_ORIGINS": "https://a.example, http://localhost:3000"})
    assert settings["REQUIRE_API_KEY"] is True
    assert settings["CORS_ORIGINS"] == ["https://a.example", "http://localhost:3000"]
    validate_settings(settings)
    assert load_settings({})["REQUIRE_API_KEY"] is None  # decided by APP_ENV in create_app
