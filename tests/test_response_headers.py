"""Which response headers appear where: each header a client library or browser acts on."""

from __future__ import annotations


def test_every_answer_says_nosniff(make_app):
    app = make_app(REQUIRE_API_KEY=True)
    client = app.test_client()
    answers = [client.get("/healthz"), client.get("/conversations"), client.post("/openai-completion", data="x")]
    assert [a.headers["X-Content-Type-Options"] for a in answers] == ["nosniff"] * 3
