"""The path of one chat request through the project's files, traced as it runs.

Every chat route, plain and streamed, with client keys and rate limits on: the parts of
the project whose code runs for the request number at most 10 (a part is a top-level
module or a package folder: `routes/`, `schemas/`, `services/`, `services/llm/`,
`services/responses/`; a folder holds one room per concern), and control flows one way through the files:
a file never calls into a file that is (directly or not) its caller, and the server enters
the project only through the request hooks and the route, which a stream's server resumes
chunk by chunk. README's Layout section writes this path out, file by file.
"""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

import pytest
from support import ROOT, bearer, create_client_key, trace_request

# The files the server may call into: the request hooks (id and clock, key, the limiter's
# callables, the body's checks), the schemas whose validators pydantic calls and whose JSON
# schema flask-openapi3 reads as it validates, and the route, whose generator a stream's
# server resumes.
HOOKS = {"telemetry.py", "auth.py", "ratelimit.py", "request_body.py"} | {
    f"schemas/{name}.py" for name in ("common", "validation", "chat", "items", "responses")
}
# Each chat route and the file its view is in.
CHAT_ROUTES = [
    ("/openai-completion", {"prompt": "hello"}, "routes/chat.py"),
    ("/process-payload", {"messages": [{"role": "user", "content": "hello"}], "temperature": 0.5}, "routes/chat.py"),
    (
        "/v1/chat/completions",
        {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]},
        "routes/chat.py",
    ),
    ("/v1/responses", {"model": "fake-model", "input": "hello"}, "routes/responses.py"),
]


def part_of(file: str) -> str:
    """The part a project file belongs to: itself at the top level, else its folder."""
    folder, _, _ = file.rpartition("/")
    return folder + "/" if folder else file


@pytest.fixture
def traced_app(make_app):
    app = make_app(REQUIRE_API_KEY=True, RATELIMIT_ENABLED=True, RATELIMIT_COMPLETION="1000/minute")
    return app, bearer(create_client_key(app))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("path,body,route", CHAT_ROUTES, ids=[path for path, _, _ in CHAT_ROUTES])
def test_a_chat_request_runs_through_at_most_ten_parts_one_way(traced_app, path, body, route, stream):
    app, key = traced_app
    client = app.test_client()
    body = {**body, "stream": stream}
    client.post(path, json=body, headers=key).get_data()  # first use: imports, caches

    status, traced = trace_request(client, path, body, key)
    calls = {(call.caller, call.called) for call in traced if call.caller != call.called}

    assert status == 200
    files = {called for _, called in calls}
    parts = {part_of(file) for file in files}
    assert len(parts) <= 10, sorted(parts)
    assert route in files and "services/chat.py" in files and any(file.startswith("services/llm") for file in files)
    entered_by_server = {called for caller, called in calls if caller == "<server>"}
    assert entered_by_server <= HOOKS | {route}, sorted(entered_by_server)
    graph: dict[str, set[str]] = {}
    for caller, called in calls:
        if caller != "<server>":
            graph.setdefault(called, set()).add(caller)
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:  # a file called back into one of its callers
        pytest.fail(f"control returns to a file it left: {exc.args[1]}")
    # README's path names every file the request runs through.
    readme = (ROOT / "README.md").read_text()
    written = readme.split("**One request, `POST /openai-completion`")[1].split("\n## ")[0]
    for name in files:
        assert f"`{name}`" in written, f"README's path does not name {name}"
