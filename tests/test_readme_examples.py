"""Every example a user copies runs verbatim against a live server: this README's Python and
curl examples, and the canonical chat-completions usage from the official SDK's own README
(the installed package's, so a new SDK release is tested as it documents itself), with and
without server-side memory. Only the address changes: the examples say 127.0.0.1:5000."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata

import pytest
from fake_upstream import tool_history_error
from openai import OpenAI
from support import ROOT, LiveServer, rows_of

EXAMPLE_URL = "http://127.0.0.1:5000"
README = (ROOT / "README.md").read_text()
SDK_README = metadata.metadata("openai").get_payload()
# The streaming loop of OpenAI's chat-completions guide, as users write it.
SDK_STREAM_LOOP = """\
from openai import OpenAI

client = OpenAI()

stream = client.chat.completions.create(
    model="gpt-5.5",
    messages=[{"role": "user", "content": "Say this is a test"}],
    stream=True,
)
for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="")
"""


def code_blocks(text: str, *languages: str) -> list[str]:
    """The fenced code blocks of a Markdown text in the given languages, in order."""
    fence = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return [body for language, body in fence.findall(text) if language in languages]


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **env}
    )
    assert result.returncode == 0, f"{code}\n--- stderr ---\n{result.stderr}"
    return result


def readme_python_examples() -> list[str]:
    """This README's runnable Python examples: whole programs that talk to the service."""
    return [b for b in code_blocks(README, "python") if EXAMPLE_URL in b and b.lstrip().startswith(("import", "from"))]


def readme_curl_examples() -> list[str]:
    """This README's curl examples: the shell blocks that only call the service with curl."""
    return [
        block
        for block in code_blocks(README, "sh")
        if EXAMPLE_URL in block and all(line.startswith(("curl ", " ", "}", "'")) for line in block.splitlines())
    ]


def sdk_chat_examples() -> list[str]:
    """The official SDK README's synchronous chat-completions examples, whole programs (a
    snippet that uses the `client` of the one before it gets that client's two lines).
    Examples of other kinds of client (workload identity, Azure) are for other servers."""
    setup = "from openai import OpenAI\n\nclient = OpenAI()\n"
    examples = []
    for block in code_blocks(SDK_README, "python", "py"):
        if "client.chat.completions" not in block or "await" in block or "with_options" in block:
            continue
        if re.search(r"client = \w*OpenAI\(", block) and "client = OpenAI()" not in block:
            continue  # a client of another cloud's auth (workload identity, Azure): not ours
        examples.append(block if "client = OpenAI(" in block else setup + block)
    return [*examples, SDK_STREAM_LOOP]


def test_the_examples_were_found():
    assert len(readme_python_examples()) >= 2
    assert sum(block.count("curl ") for block in readme_curl_examples()) >= 6
    found = "\n".join(sdk_chat_examples())
    for usage in ("with_raw_response", "with_streaming_response", "chunk.choices[0].delta.content"):
        assert usage in found


def test_readme_python_examples_run_verbatim(live_server, upstream, app):
    for example in readme_python_examples():
        result = _run_python(example.replace(EXAMPLE_URL, live_server.url))
        assert result.stdout.strip(), example
    live_server.wait_idle()
    # The SDK example continues "alice" with memory: its later calls carry the earlier turns.
    assert any(len(body["messages"]) > 2 for body in upstream.chat_requests())
    assert rows_of(app, "alice")


def test_readme_curl_examples_run_verbatim(live_server, upstream):
    for block in readme_curl_examples():
        script = "set -euo pipefail\n" + block.replace(EXAMPLE_URL, live_server.url)
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{block}\n{result.stderr}"
        output = result.stdout
        assert output.strip() and "event: error" not in output, (block, output)
        answers = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert all(answer.get("error") is None for answer in answers), (block, output)
        if "event: " in output:
            assert "event: done" in output
        if "-X DELETE" in block:
            assert output.rstrip().endswith("204")


@pytest.mark.parametrize("memory", [False, True], ids=["stateless", "server-side-memory"])
def test_the_official_sdk_readme_runs_verbatim(live_server, upstream, app, memory):
    examples = sdk_chat_examples()
    for example in examples:
        if memory:  # the same program, asking for memory as our README shows
            example = example.replace(
                "client = OpenAI()", 'client = OpenAI(default_headers={"X-Conversation-Id": "sdk-readme"})'
            )
        result = _run_python(example, OPENAI_BASE_URL=f"{live_server.url}/v1", OPENAI_API_KEY="unused")
        assert "Traceback" not in result.stderr and result.stdout.strip()
    live_server.wait_idle()
    sent = upstream.chat_requests()
    assert len(sent) == len(examples)
    assert all(tool_history_error(body["messages"]) is None for body in sent)
    if memory:
        # Each program after the first is given the turns of the ones before it.
        assert [len(body["messages"]) for body in sent] == sorted(len(body["messages"]) for body in sent)
        assert len(sent[-1]["messages"]) > len(sent[0]["messages"])
        assert len(rows_of(app, "sdk-readme")) == 2 * len(
            examples
        )  # each turn and reply; the developer message leads, unstored
    else:
        assert all(len(body["messages"]) <= 2 for body in sent)


@pytest.mark.parametrize("offline", [False, True], ids=["upstream", "offline-model"])
def test_the_sdks_stream_helper_gets_a_whole_message(make_app, upstream, offline):
    """`client.chat.completions.stream(...)` accumulates the chunks into a message: the first
    chunk must name the role, as OpenAI's does (the Node SDK fails without it)."""
    app = make_app(LLM_OFFLINE=offline)
    server = LiveServer(app)
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    try:
        with client.chat.completions.stream(
            model="fake-model", messages=[{"role": "user", "content": "Say this is a test"}]
        ) as stream:
            final = stream.get_final_completion()
    finally:
        client.close()
        server.stop()
    message = final.choices[0].message
    assert message.role == "assistant" and "Say this is a test" in message.content


def test_the_routing_example_is_a_valid_routing_file(tmp_path, monkeypatch):
    """README's Routing example, verbatim, is a routing file the service starts with: its
    groups, aliases, fallbacks and deployments as written (keys from the variables it names)."""
    from config import load_settings, resolve_defaults
    from services.llm.routing import load_routing

    (example,) = [block for block in code_blocks(README, "yaml") if "groups:" in block]
    path = tmp_path / "routing.yaml"
    path.write_text(example)
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"):
        monkeypatch.setenv(name, "set-for-the-test")
    config = load_settings({"ROUTING_FILE": str(path)})
    resolve_defaults(config)

    routing = load_routing(config)

    assert list(routing.groups) == ["gpt-4o", "local", "gpt-4o-long"]
    assert routing.groups["gpt-4o"].aliases == ["gpt-4o-2024-08-06"]
    assert [d.provider for d in routing.groups["gpt-4o"].deployments] == ["openai", "azure"]
    assert routing.groups["local"].deployments[0].continues
    assert routing.groups["gpt-4o-long"].deployments[0].continuation_instruction
