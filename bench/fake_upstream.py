"""A fast OpenAI-compatible fake upstream for benchmarks: asyncio, keep-alive, fixed delay.

    python bench/fake_upstream.py --port 9100 --delay 1.0

Answers POST .../chat/completions with a small chat completion after `--delay` seconds
(await, so thousands of requests can wait at once on one core) and GET .../models. It
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


def _response(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
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
            if length:
                await reader.readexactly(length)
            if method == "POST" and path.split("?")[0].endswith("/chat/completions"):
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
    args = parser.parse_args()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.delay), args.host, args.port, backlog=4096, limit=1 << 20
    )
    print(f"fake upstream on http://{args.host}:{args.port}/v1 delay={args.delay}s", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
