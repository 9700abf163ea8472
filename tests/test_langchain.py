"""LangChain's ChatOpenAI against a live server, used as its own README shows: it sends the
whole conversation every turn, streams, calls tools, and speaks the Responses API."""

from __future__ import annotations

import pytest
from fake_upstream import Reply, tool_call, tool_history_error
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from support import rows_of


@tool
def get_weather(city: str) -> str:
    """Current weather of a city."""
    return f"18C and sunny in {city}"


def _llm(live_server, **options) -> ChatOpenAI:
    return ChatOpenAI(base_url=f"{live_server.url}/v1", api_key="unused", model="fake-model", max_retries=0, **options)


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_chatopenai_with_server_side_memory_sends_each_turn_once(live_server, upstream, app, stream):
    llm = _llm(live_server, default_headers={"X-Conversation-Id": "lc-memory"})
    history = [HumanMessage("My name is Ada.")]
    for question in ("What is my name?", "Say it again."):
        reply = "".join(c.content for c in llm.stream(history)) if stream else llm.invoke(history).content
        history += [AIMessage(reply), HumanMessage(question)]
    llm.invoke(history)
    sent = [m["content"] for m in upstream.chat_requests()[-1]["messages"]]
    assert sent == [
        "My name is Ada.",
        "echo: My name is Ada.",
        "What is my name?",
        "echo: What is my name?",
        "Say it again.",
    ]
    assert len(rows_of(app, "lc-memory")) == 6


def test_chatopenai_tool_round_trip_with_memory(live_server, upstream):
    llm = _llm(live_server, default_headers={"X-Conversation-Id": "lc-tools"}).bind_tools([get_weather])
    call = tool_call("call_lc1", "get_weather", {"city": "Paris"})
    upstream.enqueue(Reply(tool_calls=[call]))
    messages = [HumanMessage("Weather in Paris?")]
    asked = llm.invoke(messages)
    assert asked.tool_calls[0]["name"] == "get_weather" and asked.tool_calls[0]["args"] == {"city": "Paris"}
    messages += [asked, ToolMessage(get_weather.invoke(asked.tool_calls[0]["args"]), tool_call_id="call_lc1")]
    answered = llm.invoke(messages)
    assert answered.content == "echo: Weather in Paris?"
    assert all(tool_history_error(body["messages"]) is None for body in upstream.chat_requests())


def test_chatopenai_on_the_responses_api_continues_by_previous_response_id(live_server, upstream):
    llm = _llm(live_server, use_responses_api=True, use_previous_response_id=True)
    first = llm.invoke([HumanMessage("one")])
    second = llm.invoke([HumanMessage("one"), first, HumanMessage("two")])
    assert second.text == "echo: two"
    assert [m["content"] for m in upstream.chat_requests()[-1]["messages"]] == ["one", "echo: one", "two"]
