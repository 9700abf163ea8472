"""The Conversations API's items are bounded as chat turns are, a conversation's stored size
is bounded, and every listing is bounded in bytes as well as rows (issue 22, item 2)."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from support import all_rows


def _message(text: str, role: str = "user") -> dict[str, Any]:
    return {"type": "message", "role": role, "content": text}


# What the probe sent: ten items of 99,000 characters; MAX_PROMPT_CHARS (32,000 by default)
# is what any chat turn may carry. Ten of 9,900 characters are as many as one turn may hold
# three times over, and fit in the request body.
TOO_MANY_CHARACTERS = [_message(f"{n} " + "z" * 9_900) for n in range(10)]


def test_items_added_past_max_prompt_chars_are_refused_and_nothing_is_stored(make_app, sdk_of):
    app = make_app()
    sdk = sdk_of(app)
    conversation = sdk.conversations.create()
    before = all_rows(app)

    with pytest.raises(openai.BadRequestError) as added:
        sdk.conversations.items.create(conversation.id, items=TOO_MANY_CHARACTERS)
    with pytest.raises(openai.BadRequestError) as created:
        sdk.conversations.create(items=TOO_MANY_CHARACTERS)

    for refused in (added.value, created.value):
        assert refused.param == "items"
        assert refused.body["message"] == "Items are too long: 99020 characters, the limit is 32000"
    assert all_rows(app) == before


def test_a_function_calls_arguments_count_as_the_characters_of_a_turn(make_app, sdk_of):
    sdk = sdk_of(make_app(MAX_PROMPT_CHARS=1_000))
    conversation = sdk.conversations.create()
    call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a": "' + "w" * 2_000 + '"}'}
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.conversations.items.create(conversation.id, items=[call])
    assert refused.value.param == "items"


def test_a_conversation_full_up_to_its_stored_size_takes_no_more_items(make_app, sdk_of):
    from services.conversations import stored_size

    item = _message("a" * 30_000)
    size = stored_size([{"role": "user", "content": item["content"]}])
    app = make_app(CONVERSATION_MAX_BYTES=3 * size)
    sdk = sdk_of(app)
    conversation = sdk.conversations.create(items=[item])
    sdk.conversations.items.create(conversation.id, items=[item])
    third = sdk.conversations.items.create(conversation.id, items=[item])
    before = all_rows(app)

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.conversations.items.create(conversation.id, items=[_message("one more")])

    assert (refused.value.code, refused.value.param) == ("conversation_too_large", "items")
    assert f"it stores {3 * size} bytes" in refused.value.message
    assert all_rows(app) == before
    # What is stored is what counts: erase an item and there is room again.
    sdk.conversations.items.delete(third.data[0].id, conversation_id=conversation.id)
    assert sdk.conversations.items.create(conversation.id, items=[_message("one more")]).data


def test_a_new_conversation_with_more_than_its_stored_size_is_refused(make_app, sdk_of):
    app = make_app(CONVERSATION_MAX_BYTES=10_000)
    sdk = sdk_of(app)
    before = all_rows(app)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.conversations.create(items=[_message("b" * 20_000)])
    assert refused.value.code == "conversation_too_large"
    assert all_rows(app) == before


BIG_TEXT = 30_000  # characters of each item below; four do not fit in a page of 100,000 bytes


def _big_conversation(sdk: openai.OpenAI, count: int) -> str:
    conversation = sdk.conversations.create()
    for number in range(count):
        sdk.conversations.items.create(conversation.id, items=[_message(f"{number} " + "c" * BIG_TEXT)])
    return conversation.id


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_a_conversations_items_page_ends_early_when_full_and_the_sdk_pages_on(make_app, sdk_of, order):
    sdk = sdk_of(make_app(PAGE_MAX_BYTES=100_000))
    conversation_id = _big_conversation(sdk, 7)

    page = sdk.conversations.items.list(conversation_id, limit=100, order=order)

    assert (len(page.data), page.has_more) == (3, True)
    every = [item.content[0].text.split(" ")[0] for item in page]  # the SDK asks for the next pages
    assert every == [str(n) for n in (range(7) if order == "asc" else reversed(range(7)))]


def test_one_item_larger_than_a_page_is_a_page_of_its_own(make_app, sdk_of):
    sdk = sdk_of(make_app(PAGE_MAX_BYTES=10_000))
    conversation_id = _big_conversation(sdk, 2)
    page = sdk.conversations.items.list(conversation_id, order="asc")
    assert (len(page.data), page.has_more) == (1, True)
    assert len(list(page)) == 2


def test_a_stored_responses_input_items_page_ends_early_when_full(make_app, sdk_of):
    sdk = sdk_of(make_app(PAGE_MAX_BYTES=25_000))
    inputs = [_message(f"{n} " + "i" * 10_000) for n in range(3)]
    response = sdk.responses.create(model="fake-model", input=inputs)

    page = sdk.responses.input_items.list(response.id, order="asc")

    assert (len(page.data), page.has_more) == (2, True)
    assert [item.content[0].text.split(" ")[0] for item in page] == ["0", "1", "2"]


def test_a_conversations_rows_page_ends_early_when_full_with_its_cursor(make_app):
    app = make_app(PAGE_MAX_BYTES=100_000)
    client = app.test_client()
    for number in range(7):
        answer = client.post("/openai-completion", json={"prompt": f"{number} " + "r" * BIG_TEXT, "user_id": "big"})
        assert answer.status_code == 200

    pages, cursor = [], None
    while True:
        query = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        body = client.get("/conversations/big", query_string=query).get_json()
        pages.append(len(body["messages"]))
        cursor = body["next_cursor"]
        if cursor is None:
            break

    # 14 rows (a prompt and its echo each) of about 30 kB: three a page, then what is left.
    assert pages == [3, 3, 3, 3, 2]
