"""Per-request CPU of the non-streamed routes, in-process (no HTTP server, no load generator).

    .venv/bin/python bench/cpu.py                  # 2,000 requests a route, gevent-patched
    .venv/bin/python bench/cpu.py --requests 5000 --no-gevent
    .venv/bin/python bench/cpu.py --requests 3000 --profile 2>/dev/null   # where it goes (cProfile)
    .venv/bin/python bench/cpu.py --stream 2>/dev/null   # also a streamed chat (20 chunks, no pause)

Starts bench/fake_upstream.py (delay 0) on another core, migrates a fresh SQLite file and
builds the app as `make run` does (settings from the environment, rate limits off), with
the standard library patched by gevent first as gunicorn's gevent worker does. Then, for
each route, sends `--requests` requests through `app.test_client()` after 200 to warm
up, and prints the CPU time of this process per request (time.process_time: the server's
share, the upstream runs in its own process) and the wall time per request. `llm.complete`
alone is measured the same way, to separate the upstream call from the rest. The app's
JSON log lines go to stderr: send it to /dev/null for clean output.
"""

from __future__ import annotations

import argparse
import sys

if __name__ == "__main__" and "--no-gevent" not in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from run import CLIENT_CPUS, in_process_app, pinned, wait_http  # noqa: E402

PROMPT = "Say something short."
ROUTES = {
    "/openai-completion": {"prompt": PROMPT},
    "/v1/chat/completions": {"model": "fake-model", "messages": [{"role": "user", "content": PROMPT}]},
}
# A streamed chat: the upstream sends its 20 content chunks (then finish, usage, [DONE])
# with no pause, so the figure is the CPU of one stream's start, relay and end.
STREAMED = ("/v1/chat/completions", {**ROUTES["/v1/chat/completions"], "stream": True})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(label: str, call, requests: int) -> dict:
    for _ in range(200):
        call()
    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(requests):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    times.sort()
    row = {
        "what": label,
        "requests": requests,
        "cpu_ms_per_request": cpu / requests * 1000,
        "wall_ms_per_request": wall / requests * 1000,
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": times[int(len(times) * 0.99)] * 1000,
    }
    print(json.dumps(row), flush=True)
    return row


def profile(label: str, call, requests: int) -> None:
    """`requests` calls under cProfile (after 200 to warm up); its cumulative top 60."""
    import cProfile
    import pstats

    for _ in range(200):
        call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        call()
    profiler.disable()
    print(f"## {label}, {requests} requests", flush=True)
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-gevent", action="store_true", help="do not patch the standard library")
    parser.add_argument("--profile", action="store_true", help="print cProfile's cumulative top 60 of each route")
    parser.add_argument("--stream", action="store_true", help="also a streamed /v1/chat/completions")
    args = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen(
        pinned(
            CLIENT_CPUS, [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(port), "--stream-seconds", "0"]
        ),
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
            app = in_process_app(tmp, port)
            client = app.test_client()
            llm = app.extensions["llm"]
            messages = [{"role": "user", "content": PROMPT}]
            measure("llm.complete", lambda: llm.complete(messages), args.requests)
            routes = [(f"POST {path}", path, body) for path, body in ROUTES.items()]
            routes += [(f"POST {STREAMED[0]}, streamed", *STREAMED)] if args.stream else []
            for label, path, body in routes:

                def post(path=path, body=body) -> None:
                    response = client.post(path, json=body)
                    text = response.get_data(as_text=True)  # a stream is read to its end
                    assert response.status_code == 200, text
                    assert not body.get("stream") or text.endswith("data: [DONE]\n\n"), text[-200:]

                if args.profile:
                    profile(label, post, args.requests)
                else:
                    measure(label, post, args.requests)
            llm.close()
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
