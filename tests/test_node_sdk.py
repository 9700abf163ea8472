"""The official OpenAI Node SDK against a live server, used as its own README shows: chat
completions plain, streamed with its `for await` loop and through its stream helper, the
Responses API (plain, chained, streamed) and the Conversations API."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from fake_upstream import tool_history_error
from support import ROOT

SCRIPT = ROOT / "tests" / "node" / "readme_examples.mjs"


def test_the_node_sdk_readme_usage_runs_against_the_service(live_server, upstream):
    node = shutil.which("node")
    if node is None or not (ROOT / "tests" / "node" / "node_modules" / "openai").exists():
        pytest.fail("node and tests/node/node_modules are needed: `make install` runs `npm ci --prefix tests/node`")
    result = subprocess.run(
        [node, str(SCRIPT), f"{live_server.url}/v1"], capture_output=True, text=True, timeout=120, cwd=SCRIPT.parent
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["chat"] == "echo: Are semicolons optional in JavaScript?"
    assert seen["streamed"] == "echo: Say this is a test"
    assert seen["helperRole"] == "assistant"  # the stream helper needs the role in the first chunk
    assert seen["responseText"] == "echo: Are semicolons optional in JavaScript?"
    assert seen["chainedText"] == "echo: And in Python?"
    assert seen["streamedResponse"] == "echo: Say this is a test"
    assert seen["conversationItems"] == ["message", "message"]
    assert seen["models"]
    chained = upstream.chat_requests()[4]["messages"]
    assert [m["content"] for m in chained] == [
        "Are semicolons optional in JavaScript?",
        "echo: Are semicolons optional in JavaScript?",
        "And in Python?",
    ]
    assert all(tool_history_error(body["messages"]) is None for body in upstream.chat_requests())
