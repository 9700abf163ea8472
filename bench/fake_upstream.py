"""A fast OpenAI-compatible fake upstream for benchmarks: asyncio, keep-alive, fixed delay.

    python bench/fake_upstream.py --port 9100 --delay 1.0
    python bench/fake_upstream.py --port 9110 --stream-chunks 20 --stream-seconds 5

Answers POST .../chat/completions with a small chat completion after `--delay` seconds
(await, so thousands of requests can wait at once on one core) and GET .../models. A
request with `"stream": true` gets Server-Sent Events instead: `--stream-chunks` content
chunks spread evenly over `--stream-seconds` (the first at once), then the finish chunk,
the usage chunk (when `stream_options.include_usage` asks for it) and `data: [DONE]`. It
parses just enough HTTP/1.1 for keep-alive clients (the openai SDK, LiteLLM, wrk), so
that it is never the bottleneck of what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

COMPLETION = {
    "object": "chat.completion",
    "model": "fake-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "benchmark reply"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}
MODELS = json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}).encode()


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _chunk(payload: dict | str) -> bytes:
    """One SSE event as one HTTP/1.1 chunk."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    event = f"data: {data}\n\n".encode()
    return f"{len(event):x}\r\n".encode() + event + b"\r\n"


async def stream(writer: asyncio.StreamWriter, request: dict, chunks: int, seconds: float, name: str) -> None:
    """A streamed chat completion: `chunks` content chunks evenly over `seconds`, then the end."""
    base = {"id": f"chatcmpl-bench-{name}", "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = "fake-model"
    writer.write(STREAM_HEAD)
    interval = seconds / chunks
    start = time.monotonic()
    for index in range(chunks):
        # Each chunk at its own deadline, so the stream takes `seconds` however busy we are.
        await asyncio.sleep(max(0.0, start + index * interval - time.monotonic()))
        delta = {"content": f"tok{index} "} if index else {"role": "assistant", "content": "tok0 "}
        writer.write(_chunk({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
        await writer.drain()
    await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
    tail = _chunk({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (request.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}
        tail += _chunk({**base, "choices": [], "usage": usage})
    writer.write(tail + _chunk("[DONE]") + b"0\r\n\r\n")


def _response(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace) -> None:
    delay = args.delay
    counter = 0
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                if line[:15].lower() == "content-length:":
                    length = int(line[15:].strip())
            body = await reader.readexactly(length) if length else b""
            if method == "POST" and path.split("?")[0].endswith("/chat/completions"):
                request = json.loads(body) if b'"stream"' in body else {}
                if request.get("stream"):
                    counter += 1
                    await stream(writer, request, args.stream_chunks, args.stream_seconds, f"{id(writer)}-{counter}")
                    await writer.drain()
                    continue
                if delay:
                    await asyncio.sleep(delay)
                counter += 1
                body = json.dumps(
                    {**COMPLETION, "id": f"chatcmpl-bench-{id(writer)}-{counter}", "created": int(time.time())}
                ).encode()
                writer.write(_response("200 OK", body))
            elif method == "GET" and path.split("?")[0].endswith("/models"):
                writer.write(_response("200 OK", MODELS))
            else:
                writer.write(_response("404 Not Found", b'{"error": {"message": "not found"}}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each completion answer")
    parser.add_argument("--stream-chunks", type=int, default=20, help="content chunks of a streamed answer")
    parser.add_argument("--stream-seconds", type=float, default=5.0, help="how long a streamed answer takes")
    args = parser.parse_args()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args), args.host, args.port, backlog=4096, limit=1 << 20
    )
    print(f"fake upstream on http://{args.host}:{args.port}/v1 delay={args.delay}s", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
