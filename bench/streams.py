"""Long streams and idle/slow clients: this service beside LiteLLM's proxy, one run.

    make bench-streams        # = .venv/bin/python bench/streams.py   (about 5 minutes)
    .venv/bin/python bench/streams.py --clients 100,1000 --targets direct,ours
    .venv/bin/python bench/streams.py --no-streams --idle        # only the idle/slow scenario

Starts, all on 127.0.0.1: one fake upstream (bench/fake_upstream.py) whose streamed
answers send 20 chunks over 5 s (non-streamed ones answer at once); this service as
`make run` starts it with no tuning (`ours`: gevent, the defaults) and a tuned gthread
(`gthread-1100`: GUNICORN_WORKER_CLASS=gthread, 1100 threads, pool of 8), plus the old
default (`gthread-8`, for the idle scenario) and, on request (`--targets`), two gevent
workers on both cores (`gevent-2`: WEB_CONCURRENCY=2, sharing the client's core);
LiteLLM's proxy (one worker, from bench/.venv-litellm, as bench/run.py makes it). Rate
limits are off (LiteLLM has none). `--routing` routes this service and LiteLLM over the
same deployments (bench/routing.yaml, bench/litellm_router.yaml; see bench/run.py).

Streams: N clients (an asyncio client on raw sockets, pinned to the other core with the
upstream) all open `POST /v1/chat/completions` with `"stream": true` at once. Reported:
wall time until the last stream ends, "of ideal" (5 s / wall), first-token latency p50/p99
(request sent to the first `data:` event), errors (refused, non-200, timed out, or no
`[DONE]`), and the server's worker RSS (peak while the streams are open). The printed
summary ends with issue 12's stream targets for `ours`, each measured and met or not,
LiteLLM's figure beside it.

Idle/slow: 1,000 connections that send nothing and 50 that send half a request head (then
a header line every 2 s), reopened whenever the server closes them; meanwhile a
legitimate (non-streamed) chat request every 0.5 s for 10 s. Reported: how many answered,
their latency p50/max, and how often the server closed the held connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from run import (
    BENCH,
    CLIENT_CPUS,
    LITELLM_KEY,
    RESULTS,
    ROOT,
    ROUTING_FILE,
    SERVER_CPUS,
    VENV,
    Process,
    log,
    met,
    pinned,
    routing_env,
    rss_kib,
    start_litellm,
    targets_table,
    wait_http,
)

UPSTREAM_PORT = 9110
PORTS = {
    "direct": UPSTREAM_PORT,
    "ours": 9210,
    "gthread-1100": 9211,
    "gthread-8": 9212,
    "gevent-2": 9213,
    "litellm": 9310,
}
STREAM_SECONDS = 5.0
# Issue 12's targets for streams (`make run`'s defaults, beside LiteLLM in the same run).
TARGET_OF_IDEAL = {1000: 0.85, 100: 0.97}
TARGET_FIRST_TOKEN_OVER_DIRECT_MS = 150  # 1,000 streams, first-token p50 minus direct's
MESSAGES = [{"role": "user", "content": "Tell me a long story."}]
# Variables of ours that a developer's shell might carry: `ours` must run on the defaults.
_TUNING = ("WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_WORKER_CLASS", "GUNICORN_WORKER_CONNECTIONS")
_TUNING += ("DATABASE_POOL_SIZE", "DATABASE_URL", "TIMEOUT", "OPENAI_TIMEOUT", "OPENAI_MAX_RETRIES")


# -- the load client (runs in its own process, pinned beside the upstream) -------------


def _request(port: int, body: dict, key: str | None) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(data)}\r\n" + (f"Authorization: Bearer {key}\r\n" if key else "") + "\r\n"
    return head.encode() + data


async def _one_stream(port: int, request: bytes, timeout: float) -> dict:
    sent = time.monotonic()
    first = None
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            sent = time.monotonic()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                return {"error": f"HTTP {status}"}
            tail = b""
            while True:
                data = await reader.read(65536)
                if not data:
                    return {"error": "closed before [DONE]"}
                if first is None and b"data:" in data:
                    first = time.monotonic()
                tail = (tail + data)[-4096:]
                if b'data: {"error"' in tail:
                    return {"error": "error event"}
                if b"data: [DONE]" in tail:
                    return {"first_ms": (first - sent) * 1000, "end": time.monotonic()}
    except TimeoutError:
        return {"error": "timeout"}
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        return {"error": type(exc).__name__}
    finally:
        if writer is not None:
            writer.close()


async def streams_client(port: int, clients: int, key: str | None, timeout: float) -> dict:
    """N concurrent streamed requests, all started at once; wall time, first-token latency, errors."""
    request = _request(port, {"model": "fake-model", "messages": MESSAGES, "stream": True}, key)
    start = time.monotonic()
    results = await asyncio.gather(*(_one_stream(port, request, timeout) for _ in range(clients)))
    ok = [r for r in results if "error" not in r]
    errors: dict[str, int] = {}
    for r in results:
        if "error" in r:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    firsts = sorted(r["first_ms"] for r in ok)
    wall = (max(r["end"] for r in ok) - start) if ok else float("nan")
    return {
        "clients": clients,
        "ok": len(ok),
        "errors": errors,
        "wall_s": wall,
        "of_ideal": STREAM_SECONDS / wall if ok else 0.0,
        "first_p50_ms": statistics.median(firsts) if firsts else float("nan"),
        "first_p99_ms": firsts[min(len(firsts) - 1, int(len(firsts) * 0.99))] if firsts else float("nan"),
    }


async def _hold(port: int, half_head: bool, stop: asyncio.Event, stats: dict) -> None:
    """Keep one idle (or half-sent) connection open; reopen it whenever the server closes it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["refused"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["open"] += 1
        opened = time.monotonic()
        try:
            if half_head:
                writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
            while not stop.is_set():
                try:
                    async with asyncio.timeout(2):
                        if not await reader.read(1024):
                            break  # the server closed it
                except TimeoutError:
                    if half_head:
                        writer.write(b"X-Slow: 1\r\n")  # a slowloris trickle
                        await writer.drain()
        except OSError:
            pass
        finally:
            stats["open"] -= 1
            writer.close()
        if not stop.is_set():
            stats["closed_by_server"] += 1
            stats["held_s"].append(time.monotonic() - opened)


async def idle_client(port: int, idle: int, slow: int, key: str | None, seconds: float) -> dict:
    """Hold `idle` silent and `slow` half-head connections; time legitimate requests meanwhile."""
    stop = asyncio.Event()
    stats = {"open": 0, "refused": 0, "closed_by_server": 0, "held_s": []}
    holders = [asyncio.create_task(_hold(port, False, stop, stats)) for _ in range(idle)]
    holders += [asyncio.create_task(_hold(port, True, stop, stats)) for _ in range(slow)]
    deadline = time.monotonic() + 10
    while stats["open"] < idle + slow and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    opened = stats["open"]
    request = _request(port, {"model": "fake-model", "messages": MESSAGES}, key)
    latencies, failures = [], {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                writer.close()
            if status == 200:
                latencies.append((time.monotonic() - started) * 1000)
            else:
                failures[f"HTTP {status}"] = failures.get(f"HTTP {status}", 0) + 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
        await asyncio.sleep(max(0.0, started + 0.5 - time.monotonic()))
    held_at_end = stats["open"]
    stop.set()
    for task in holders:
        task.cancel()
    await asyncio.gather(*holders, return_exceptions=True)
    held = sorted(stats["held_s"])
    return {
        "held_open_at_start": opened,
        "held_open_at_end": held_at_end,
        "legit_ok": len(latencies),
        "legit_failed": failures,
        "legit_p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "legit_max_ms": max(latencies) if latencies else float("nan"),
        "closed_by_server": stats["closed_by_server"],
        "held_s_median_before_close": statistics.median(held) if held else None,
        "refused": stats["refused"],
    }


# -- the servers -----------------------------------------------------------------------


def start_ours(
    stack: ExitStack, name: str, workdir: Path, cpus: str = SERVER_CPUS, routing: bool = False, **tuning: str
) -> Process:
    """This service as `make run` starts it (gunicorn.conf.py, SQLite), plus `tuning` only;
    with `routing`, on bench/routing.yaml."""
    port = PORTS[name]
    env = {k: v for k, v in os.environ.items() if k not in _TUNING}
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{workdir / name}.db",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{UPSTREAM_PORT}/v1",
            "OPENAI_API_KEY": "bench-not-a-real-key",
            "OPENAI_MODEL": "fake-model",
            "RATELIMIT_ENABLED": "false",  # LiteLLM runs without limits too
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"{name}-metrics"),
            **tuning,
        }
    )
    if routing:
        env.update(routing_env(ROUTING_FILE, UPSTREAM_PORT, workdir))
    flask = [str(VENV / "flask"), "--app", "app", "db", "upgrade"]
    subprocess.run(flask, cwd=ROOT, env=env, check=True, capture_output=True)
    process = Process(name, pinned(cpus, [str(VENV / "gunicorn"), "-c", "gunicorn.conf.py", "app:create_app()"]), env)
    stack.callback(process.stop)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return process


def run_client(*args: str) -> dict:
    """This file's client mode in its own process, pinned beside the upstream."""
    command = pinned(CLIENT_CPUS, [sys.executable, str(Path(__file__).resolve()), "--client", *args])
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


class RssSampler:
    """The peak RSS (sum over `pids`) while the block runs, sampled every 0.2 s."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.peak_kib, self._stop = pids, 0, threading.Event()
        self.before_kib = sum(rss_kib(pids))

    def __enter__(self) -> RssSampler:
        def sample() -> None:
            while not self._stop.wait(0.2):
                self.peak_kib = max(self.peak_kib, sum(rss_kib(self.pids)))

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="100,500,1000", help="comma-separated stream counts")
    parser.add_argument("--targets", default="direct,litellm,ours,gthread-1100")
    parser.add_argument("--no-streams", action="store_true", help="skip the streams scenario")
    parser.add_argument("--idle", action="store_true", help="also run the idle/slow-client scenario")
    parser.add_argument("--idle-targets", default="ours,gthread-8,gthread-1100,litellm")
    parser.add_argument("--repeat", type=int, default=1, help="measure each figure this many times")
    parser.add_argument(
        "--routing", action="store_true", help="route: ours on bench/routing.yaml, LiteLLM on litellm_router.yaml"
    )
    parser.add_argument("--client", nargs="+", help=argparse.SUPPRESS)  # internal: the load client
    args = parser.parse_args()
    if args.client:
        return client_main(args.client)

    RESULTS.mkdir(exist_ok=True)
    targets = args.targets.split(",")
    idle_targets = args.idle_targets.split(",") if args.idle else []
    wanted = set(targets) | set(idle_targets)
    results: dict = {"streams": [], "idle": []}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        workdir = Path(tmp)
        upstream_cmd = [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(UPSTREAM_PORT)]
        upstream_cmd += ["--stream-chunks", "20", "--stream-seconds", str(STREAM_SECONDS)]
        upstream = Process("streams-upstream", pinned(CLIENT_CPUS, upstream_cmd))
        stack.callback(upstream.stop)
        wait_http(f"http://127.0.0.1:{UPSTREAM_PORT}/v1/models")
        servers: dict[str, Process | None] = {"direct": None}
        routing = args.routing
        results["routing"] = routing
        if "ours" in wanted:
            servers["ours"] = start_ours(stack, "ours", workdir, routing=routing)
        if "gthread-1100" in wanted:
            tuned = {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": "1100", "DATABASE_POOL_SIZE": "8"}
            servers["gthread-1100"] = start_ours(stack, "gthread-1100", workdir, routing=routing, **tuned)
        if "gthread-8" in wanted:
            gthread_8 = {"GUNICORN_WORKER_CLASS": "gthread"}
            servers["gthread-8"] = start_ours(stack, "gthread-8", workdir, routing=routing, **gthread_8)
        if "gevent-2" in wanted:
            two = {"WEB_CONCURRENCY": "2"}
            servers["gevent-2"] = start_ours(stack, "gevent-2", workdir, cpus="0,1", routing=routing, **two)
        if "litellm" in wanted:
            litellm_port = PORTS["litellm"]
            servers["litellm"] = start_litellm(stack, "litellm", litellm_port, UPSTREAM_PORT, workdir, routing=routing)
        keys = {"litellm": LITELLM_KEY}

        for name in targets if not args.no_streams else []:  # a few streams each, to warm up
            run_client("streams", str(PORTS[name]), "10", keys.get(name, ""), "60")
        for clients in [int(c) for c in args.clients.split(",")] if not args.no_streams else []:
            for attempt in range(args.repeat):
                for name in targets:
                    log(f"streams: {name}, {clients} clients (run {attempt + 1})")
                    process = servers[name]
                    pids = process.worker_pids() if process else []
                    with RssSampler(pids) as rss:
                        run = run_client("streams", str(PORTS[name]), str(clients), keys.get(name, ""), "120")
                    run.update(target=name, attempt=attempt + 1, rss_before_kib=rss.before_kib)
                    run["rss_peak_kib"] = rss.peak_kib
                    results["streams"].append(run)
                    log(json.dumps(run))
                    time.sleep(3)  # let the closed connections drain
        for name in idle_targets:
            for attempt in range(args.repeat):
                log(f"idle/slow: {name} (run {attempt + 1})")
                run = run_client("idle", str(PORTS[name]), "1000", "50", keys.get(name, ""), "10")
                run.update(target=name, attempt=attempt + 1)
                results["idle"].append(run)
                log(json.dumps(run))
                time.sleep(3)

    name = os.environ.get("BENCH_NAME", "streams")
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    print(markdown(results))


def client_main(argv: list[str]) -> None:
    mode, port, *rest = argv
    if mode == "streams":
        clients, key, timeout = rest
        result = asyncio.run(streams_client(int(port), int(clients), key or None, float(timeout)))
    else:
        idle, slow, key, seconds = rest
        result = asyncio.run(idle_client(int(port), int(idle), int(slow), key or None, float(seconds)))
    print(json.dumps(result))


def markdown(results: dict) -> str:
    lines = []
    if results["streams"]:
        lines += ["| streams | target | of ideal | wall | first token p50 / p99 | errors | worker RSS peak |"]
        lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
        for r in results["streams"]:
            errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
            rss = f"{r['rss_peak_kib'] / 1024:.0f} MiB (idle {r['rss_before_kib'] / 1024:.0f})"
            rss = rss if r["rss_peak_kib"] else ""
            lines.append(
                f"| {r['clients']} | {r['target']} | {r['of_ideal']:.0%} | {r['wall_s']:.2f} s "
                f"| {r['first_p50_ms']:.0f} / {r['first_p99_ms']:.0f} ms | {errors} | {rss} |"
            )
    if results["idle"]:
        lines += ["", "| target | held open | legit answered | legit p50 / max | held closed by server |"]
        lines += ["| --- | --- | --- | --- | --- |"]
        for r in results["idle"]:
            failed = sum(r["legit_failed"].values())
            lines.append(
                f"| {r['target']} | {r['held_open_at_start']} (end {r['held_open_at_end']}) "
                f"| {r['legit_ok']}/{r['legit_ok'] + failed} | {r['legit_p50_ms']:.0f} / {r['legit_max_ms']:.0f} ms "
                f"| {r['closed_by_server']} (median after {r['held_s_median_before_close'] or 0:.1f} s) |"
            )
    if results["streams"]:
        lines += ["", *against_targets(results["streams"])]
    return "\n".join(lines)


def against_targets(streams: list[dict]) -> list[str]:
    """Issue 12's stream targets for `ours` (`make run`'s defaults), LiteLLM's figure beside each."""

    def runs(target: str, clients: int) -> list[dict]:
        return [r for r in streams if r["target"] == target and r["clients"] == clients]

    def figures(values: list[str]) -> str:
        return " / ".join(values)

    rows = []
    for clients in (1000, 100):
        ours = runs("ours", clients)
        if not ours:
            continue
        peer = runs("litellm", clients)
        goal = TARGET_OF_IDEAL[clients]
        measured = figures([format(r["of_ideal"], ".0%") for r in ours])
        measured += f" (LiteLLM {figures([format(r['of_ideal'], '.0%') for r in peer])})" if peer else ""
        rows.append((f"{clients:,} streams >= {goal:.0%} of ideal", measured, all(r["of_ideal"] >= goal for r in ours)))
        if clients == 1000:
            errors = [sum(r["errors"].values()) for r in ours]
            rows.append(("1,000 streams, no errors", figures([str(e) for e in errors]) + " errors", not any(errors)))
            direct = runs("direct", clients)
            if direct:
                over = [o["first_p50_ms"] - d["first_p50_ms"] for o, d in zip(ours, direct, strict=False)]
                peer_over = [p["first_p50_ms"] - d["first_p50_ms"] for p, d in zip(peer, direct, strict=False)]
                measured = figures([f"+{v:,.0f} ms" for v in over])
                measured += f" (LiteLLM {figures([f'+{v:,.0f} ms' for v in peer_over])})" if peer_over else ""
                goal_ms = TARGET_FIRST_TOKEN_OVER_DIRECT_MS
                rows.append(
                    (
                        f"1,000 streams first-token p50 within {goal_ms} ms of direct's",
                        measured,
                        all(v <= goal_ms for v in over),
                    )
                )
    title = "### Against the targets (issue 12, streams; `ours` = `make run`'s defaults; each run)"
    return targets_table(title, [(target, measured, met(ok)) for target, measured, ok in rows]) if rows else []


if __name__ == "__main__":
    main()
