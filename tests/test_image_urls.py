"""Image URLs an upstream could be asked to fetch: only http, https and data URLs are taken
(a self-hosted upstream that fetches images, vLLM say, would read file:// or gopher:// on its
own host); with IMAGE_URLS_PUBLIC_ONLY, not those naming a private or loopback address either.

Each refusal is a 400 naming the field, before anything is stored or sent upstream, on every
route that takes images: /v1/chat/completions' image_url parts, /process-payload's, and the
Responses API's input_image parts (requests and conversation items alike).
"""

from __future__ import annotations

import openai
import pytest
import requests
from support import all_rows

NOT_FETCHABLE = [
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "FILE:///etc/shadow",
    "ftp://example.com/a.png",
    "javascript:alert(1)",
    "/relative/a.png",
    "a.png",
    "http:/no-host.png",
    "http://exa mple.com/a.png",
    "http://127.0.0.1\\@example.com/a.png",
]
# Private, loopback and link-local addresses, in the notations fetchers accept.
LOCAL = [
    "http://127.0.0.1/a.png",
    "http://127.1/a.png",
    "http://2130706433/a.png",
    "http://0x7f.0.0.1/a.png",
    "http://localhost:8000/a.png",
    "http://api.localhost/a.png",
    "http://10.1.2.3/a.png",
    "http://192.168.0.10/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/a.png",
    "http://[::1]/a.png",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://[fe80::1]/a.png",
    "http://%31%32%37.0.0.1/a.png",
    "https://user:pw@127.0.0.1./a.png",
]
PUBLIC = ["https://example.com/cat.png", "http://93.184.215.14/a.png", "https://[2606:4700::1111]/a.png"]
DATA = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


def _chat_parts(url: str) -> list[dict]:
    return [{"type": "text", "text": "What is in it?"}, {"type": "image_url", "image_url": {"url": url}}]


def _refused_by_chat_completions(sdk, url: str) -> dict:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": _chat_parts(url)}])
    return refused.value.body


def _refused_by_responses(sdk, url: str) -> dict:
    content = [{"type": "input_text", "text": "What is in it?"}, {"type": "input_image", "image_url": url}]
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="fake-model", input=[{"role": "user", "content": content}])
    return refused.value.body


def _refused_by_process_payload(live_server, url: str) -> dict:
    answer = requests.post(
        f"{live_server.url}/process-payload",
        json={"messages": [{"role": "user", "content": _chat_parts(url)}]},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    return answer.json()


def test_a_url_of_another_scheme_is_refused_on_every_route_before_anything_happens(app, sdk, live_server, upstream):
    for url in NOT_FETCHABLE:
        chat = _refused_by_chat_completions(sdk, url)
        assert chat["param"] == "messages.0.content.1.image_url.url", url
        assert "Image URL must" in chat["message"] and url not in chat["message"]

        responses = _refused_by_responses(sdk, url)
        assert responses["param"] == "input.0.content.1.image_url", url
        assert "Image URL must" in responses["message"]

        payload = _refused_by_process_payload(live_server, url)
        assert payload["details"][0]["field"] == "messages.0.content.1.image_url.url", url
        assert payload["details"][0]["message"].startswith("Image URL must")

    assert upstream.chat_requests() == []
    stored = all_rows(app)
    assert all(stored[table] == [] for table in ("messages", "responses", "conversations", "upstream_attempts"))


def test_the_refusal_names_the_scheme(sdk):
    assert "'file:'" in _refused_by_chat_completions(sdk, "file:///etc/passwd")["message"]
    assert "'gopher:'" in _refused_by_responses(sdk, "gopher://internal:70/")["message"]


def test_conversation_items_with_a_file_url_are_refused(sdk, upstream):
    conversation = sdk.conversations.create()
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.conversations.items.create(
            conversation.id,
            items=[{"role": "user", "content": [{"type": "input_image", "image_url": "file:///etc/passwd"}]}],
        )
    assert refused.value.body["param"] == "items.0.content.0.image_url"
    assert sdk.conversations.items.list(conversation.id).data == []


def test_by_default_every_http_https_and_data_url_is_passed_on_as_sent(sdk, upstream):
    for url in [*LOCAL, *PUBLIC, DATA]:
        sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": _chat_parts(url)}])
        assert upstream.chat_requests()[-1]["messages"][-1]["content"][1]["image_url"]["url"] == url


@pytest.fixture
def public_only(make_app, serve):
    server = serve(make_app(IMAGE_URLS_PUBLIC_ONLY=True))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    yield client, server
    client.close()


def test_public_only_refuses_private_and_loopback_addresses_on_every_route(public_only, upstream):
    sdk, server = public_only
    for url in LOCAL:
        chat = _refused_by_chat_completions(sdk, url)
        assert chat["param"] == "messages.0.content.1.image_url.url", url
        assert "private, loopback or link-local" in chat["message"]
        assert "private, loopback" in _refused_by_responses(sdk, url)["message"], url
        assert "private, loopback" in _refused_by_process_payload(server, url)["details"][0]["message"], url
    assert upstream.chat_requests() == []


def test_public_only_passes_public_addresses_data_urls_and_host_names(public_only, upstream):
    sdk, _ = public_only
    for url in [*PUBLIC, DATA, "https://intranet.example/a.png"]:
        sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": _chat_parts(url)}])
        content = [{"type": "input_image", "image_url": url}]
        sdk.responses.create(model="fake-model", input=[{"role": "user", "content": content}])
        sent = [request["messages"][-1]["content"] for request in upstream.chat_requests()[-2:]]
        assert sent[0][1]["image_url"]["url"] == url
        assert sent[1][0]["image_url"]["url"] == url
