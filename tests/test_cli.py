"""The CLI: `flask conversation show` and the `flask shell` context."""

from __future__ import annotations

import json

from fake_upstream import Status


def test_conversation_show_prints_every_turn_with_failures(make_app, upstream):
    app = make_app()
    client = app.test_client()
    client.post("/openai-completion", json={"prompt": "first question", "user_id": "cli-1"})
    upstream.enqueue(Status(500))
    client.post("/openai-completion", json={"prompt": "failed question", "user_id": "cli-1"})

    result = app.test_cli_runner().invoke(args=["conversation", "show", "cli-1"])

    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("user: first question")
    assert "assistant [fake-model, 18 tokens]: echo: first question" in lines[1]
    assert "user [failed: The language model failed (HTTP 500)]: failed question" in lines[2]


def test_conversation_show_as_json_lines(make_app):
    app = make_app()
    app.test_client().post("/openai-completion", json={"prompt": "hi", "user_id": "cli-2"})

    result = app.test_cli_runner().invoke(args=["conversation", "show", "cli-2", "--json"])

    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["role"], r["content"], r["status"]) for r in rows] == [
        ("user", "hi", "completed"),
        ("assistant", "echo: hi", "completed"),
    ]
    assert rows[1]["total_tokens"] == 18


def test_conversation_show_unknown_user_fails_clearly(runner):
    result = runner.invoke(args=["conversation", "show", "nobody"])
    assert result.exit_code != 0
    assert "No conversation stored for user_id 'nobody'" in result.output


def test_shell_context_has_db_and_models(app):
    with app.app_context():  # `flask shell` runs inside one
        context = app.make_shell_context()
    assert context["db"].__class__.__name__ == "SQLAlchemy"
    assert context["Message"].__tablename__ == "messages"


def test_migrating_works_before_the_metrics_folder_exists(tmp_path):
    from support import run_flask, service_env

    env = service_env(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "not-yet" / "metrics"))
    migrated = run_flask(env, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "not-yet" / "metrics").is_dir()
