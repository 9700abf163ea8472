"""A log line is one line whatever a client puts in it: every character that ends a line
for some reader (str.splitlines, log shippers, viewers) is escaped in the JSON, as \\n is."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from logformat import JsonFormatter

# Every character str.splitlines() breaks at; json.dumps escapes those below U+0020 itself.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@pytest.mark.parametrize("brk", list(LINE_BREAKS), ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS])
def test_a_path_with_a_line_break_is_logged_on_one_line(client, request_log, brk):
    forged = f'x{brk}{{"level": "ERROR", "message": "forged"}}'
    assert client.get("/" + quote(forged, safe="")).status_code == 404

    line = JsonFormatter().format(request_log[-1])
    assert line.splitlines() == [line]
    assert brk not in line
    assert json.loads(line)["path"] == "/" + forged  # the escape means the same character


def test_a_prompt_logged_with_log_content_stays_on_one_line(make_app, request_log):
    client = make_app(LOG_CONTENT=True).test_client()
    prompt = "one\u2028two\u2029three\x85four"
    assert client.post("/openai-completion", json={"prompt": prompt}).status_code == 200

    line = JsonFormatter().format(request_log[-1])
    assert line.splitlines() == [line]
    assert json.loads(line)["prompt_text"] == prompt
