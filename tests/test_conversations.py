"""The conversation API and its CLI: read paginated, usage, erase, export."""

from __future__ import annotations

import json
import threading

from fake_upstream import Hang, Reply, Status
from support import rows_of


def _chat(client, user_id: str, *prompts: str) -> None:
    for prompt in prompts:
        assert client.post("/openai-completion", json={"prompt": prompt, "user_id": user_id}).status_code == 200


def test_conversation_pages_oldest_first_with_a_cursor(make_app):
    client = make_app().test_client()
    _chat(client, "pager", "one", "two", "three")

    first = client.get("/conversations/pager?limit=4")
    assert first.status_code == 200
    body = first.get_json()
    assert body["user_id"] == "pager"
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two"),
        ("assistant", "echo: two"),
    ]
    assert body["messages"][1]["total_tokens"] == 18
    second = client.get(f"/conversations/pager?limit=4&cursor={body['next_cursor']}").get_json()
    assert [m["content"] for m in second["messages"]] == ["three", "echo: three"]
    assert second["next_cursor"] is None


def test_unknown_conversation_and_bad_parameters(client):
    assert client.get("/conversations/nobody").status_code == 404
    assert client.get("/conversations/nobody").get_json() == {"error": "Conversation not found"}
    assert client.get("/conversations/nobody/usage").status_code == 404
    assert client.delete("/conversations/nobody").status_code == 404

    bad_id = client.get("/conversations/not%20valid")
    assert bad_id.status_code == 400
    assert bad_id.get_json()["details"][0]["field"] == "user_id"
    bad_limit = client.get("/conversations/pager?limit=0")
    assert bad_limit.status_code == 400
    assert bad_limit.get_json()["details"] == [
        {"field": "limit", "message": "Input should be greater than or equal to 1"}
    ]
    assert client.get("/conversations/pager?cursor=abc").status_code == 400
    assert client.get("/conversations/pager?sort=desc").status_code == 400


def test_usage_counts_exchanges_by_status_and_sums_tokens(make_app, upstream):
    client = make_app().test_client()
    _chat(client, "spender", "a")
    upstream.enqueue(Reply(prompt_tokens=100, completion_tokens=50))
    _chat(client, "spender", "b")
    upstream.enqueue(Status(500))
    client.post("/openai-completion", json={"prompt": "c", "user_id": "spender"})

    usage = client.get("/conversations/spender/usage").get_json()

    assert usage["exchanges"] == {"total": 3, "completed": 2, "failed": 1, "pending": 0, "abandoned": 0}
    assert usage["messages"] == 5
    assert usage["tokens"] == {"prompt": 111, "completion": 57, "total": 168}
    assert usage["first_message_at"] <= usage["last_message_at"]


def test_delete_erases_every_row_and_the_history(make_app, upstream):
    app = make_app()
    client = app.test_client()
    _chat(client, "forget-me", "secret one", "secret two")
    _chat(client, "keep-me", "unrelated")

    response = client.delete("/conversations/forget-me")

    assert response.status_code == 204
    assert response.get_data() == b""
    assert rows_of(app, "forget-me") == []
    assert len(rows_of(app, "keep-me")) == 2
    _chat(client, "forget-me", "fresh start")
    assert upstream.chat_requests()[-1]["messages"] == [{"role": "user", "content": "fresh start"}]


def test_a_reply_arriving_after_delete_does_not_bring_the_conversation_back(make_app, upstream):
    from support import LiveServer

    app = make_app()
    server = LiveServer(app)
    arrived, release = threading.Event(), threading.Event()
    upstream.on_request = lambda _received: arrived.set()
    upstream.enqueue(Hang(release, then=Reply(text="too late")))
    result = {}

    def in_flight():
        import requests

        result["response"] = requests.post(
            f"{server.url}/openai-completion", json={"prompt": "erase me", "user_id": "gone"}, timeout=30
        )

    thread = threading.Thread(target=in_flight)
    thread.start()
    try:
        assert arrived.wait(20)
        assert app.test_client().delete("/conversations/gone").status_code == 204
    finally:
        release.set()
        thread.join(30)
        server.stop()

    assert result["response"].status_code == 200  # the client still gets its answer
    assert rows_of(app, "gone") == []


def test_cli_delete_and_export_jsonl(make_app, tmp_path):
    app = make_app()
    client = app.test_client()
    _chat(client, "audit-a", "x")
    _chat(client, "audit-b", "y", "z")
    runner = app.test_cli_runner()

    everyone = runner.invoke(args=["conversation", "export", "--format", "jsonl"])
    one = runner.invoke(args=["conversation", "export", "audit-b", "--output", str(tmp_path / "b.jsonl")])

    assert everyone.exit_code == 0, everyone.output
    rows = [json.loads(line) for line in everyone.output.splitlines()]
    assert [(r["user_id"], r["content"]) for r in rows] == [
        ("audit-a", "x"),
        ("audit-a", "echo: x"),
        ("audit-b", "y"),
        ("audit-b", "echo: y"),
        ("audit-b", "z"),
        ("audit-b", "echo: z"),
    ]
    assert one.exit_code == 0, one.output
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 4

    deleted = runner.invoke(args=["conversation", "delete", "audit-b", "--yes"])
    assert deleted.exit_code == 0, deleted.output
    assert deleted.output.strip() == "Deleted 4 message rows of 'audit-b'"
    assert rows_of(app, "audit-b") == []
    again = runner.invoke(args=["conversation", "delete", "audit-b", "--yes"])
    assert again.exit_code != 0 and "No conversation stored" in again.output


def test_cli_export_pages_through_more_rows_than_one_batch(make_app):
    from cli import iter_rows

    app = make_app()
    client = app.test_client()
    for user_id in ("p-1", "p-2", "p-3"):
        _chat(client, user_id, "a", "b")
    with app.app_context():
        rows = list(iter_rows(batch_size=3))
        one_user = list(iter_rows("p-2", batch_size=3))
    assert [(r["user_id"], r["content"]) for r in rows] == [
        (u, c) for u in ("p-1", "p-2", "p-3") for c in ("a", "echo: a", "b", "echo: b")
    ]
    assert len(one_user) == 4
