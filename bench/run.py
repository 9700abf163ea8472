"""Benchmarks: overhead, capacity and memory of this service and of LiteLLM's proxy.

    make bench            # or: .venv/bin/python bench/run.py [--quick]

Starts two fast fake upstreams (bench/fake_upstream.py: 0 s and 1 s delay), this service
under gunicorn in front of each as `make run` starts it (gunicorn.conf.py's defaults: the
gevent worker, one process, SQLite; rate limits off, as LiteLLM has none), LiteLLM's proxy
in front of each (from its own virtualenv, bench/.venv-litellm, made on first use; never a
project requirement), then drives them all with wrk and prints markdown tables, ending with
issue 12's targets for short (non-streamed) requests, each measured and met or not. Raw
wrk output goes to bench/results/. Everything listens on 127.0.0.1 only and stops at the end.

BENCH_WORKER_CLASS=gthread measures the thread worker instead (BENCH_THREADS threads,
600 by default, and a pool of 8 database connections). `--routing` routes both: this
service on bench/routing.yaml (ROUTING_FILE: a group of three deployments by priority and
a fallback group) and LiteLLM on bench/litellm_router.yaml (its Router over the same
deployments), every deployment pointed at the run's fake upstream.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
VENV = ROOT / ".venv" / "bin"
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_KEY = "sk-bench-master"  # LiteLLM refuses to start without a master key
LITELLM_CONFIG = BENCH / "litellm_config.yaml"
# --routing: this service and LiteLLM each routing over the same deployments.
ROUTING_FILE = BENCH / "routing.yaml"
LITELLM_ROUTER_CONFIG = BENCH / "litellm_router.yaml"

PROMPT = "Say something short."
OURS_BODY = json.dumps({"prompt": PROMPT})
OPENAI_BODY = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": PROMPT}]})

# `make run`'s worker by default (gunicorn.conf.py), or gthread when asked for.
WORKER_CLASS = os.environ.get("BENCH_WORKER_CLASS", "gevent").strip().lower() or "gevent"
# Variables of ours that a developer's shell might carry: `make run`'s defaults are measured.
_TUNING = ("WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_WORKER_CLASS", "GUNICORN_WORKER_CONNECTIONS")
_TUNING += ("DATABASE_POOL_SIZE", "DATABASE_URL", "TIMEOUT", "OPENAI_TIMEOUT", "OPENAI_MAX_RETRIES")

# Issue 12's targets for short requests (`make run`'s defaults, beside LiteLLM in the same run).
TARGET_OVERHEAD_P50_MS = 1.5  # at 1 client, delay 0, each non-streamed route
TARGET_VS_LITELLM_RPS = 3.0  # at 32 clients, delay 0
TARGET_OF_IDEAL_256 = 0.95  # at 256 clients, 1 s delay
TARGET_RSS_GROWTH = 0.05  # over TARGET_RSS_REQUESTS requests
TARGET_RSS_REQUESTS = 50_000

# The two cores are shared by the load generator, the fake upstream and the server under
# test: pinning keeps the server's core to itself, as it would have in production.
SERVER_CPUS = os.environ.get("BENCH_SERVER_CPUS", "0")
CLIENT_CPUS = os.environ.get("BENCH_CLIENT_CPUS", "1")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pinned(cpus: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *command] if shutil.which("taskset") else command


def in_process_app(tmp: str, upstream_port: int | None = None, routing_file: Path | None = None):
    """The app as `make run` builds it, in this process, on a fresh SQLite file in `tmp`
    (migrated), rate limits off, no sweeper; its upstream the fake on `upstream_port`
    (None: no upstream named). With `routing_file` (e.g. bench/routing.yaml), a copy of it
    whose deployments point at that upstream is the app's ROUTING_FILE. For the in-process
    benches (cpu.py, store.py, instructions.py); a caller that wants gevent patches the
    standard library first."""
    os.environ.update(
        {
            "DATABASE_URL": f"sqlite:///{tmp}/app.db",
            "OPENAI_API_KEY": "bench-not-a-real-key",
            "OPENAI_MODEL": "fake-model",
            "RATELIMIT_ENABLED": "false",
            "PROMETHEUS_MULTIPROC_DIR": f"{tmp}/metrics",
            "JOURNAL_PATH": f"{tmp}/exchanges.journal",
            "SWEEP_INTERVAL_SECONDS": "0",
        }
    )
    if upstream_port is not None:
        os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{upstream_port}/v1"
    if routing_file is not None:
        os.environ.update(routing_env(routing_file, upstream_port or 9100, Path(tmp)))
    os.makedirs(f"{tmp}/metrics", exist_ok=True)
    upgrade = [str(VENV / "flask"), "--app", "app", "db", "upgrade"]
    subprocess.run(upgrade, cwd=ROOT, check=True, capture_output=True)
    sys.path.insert(0, str(ROOT))
    from app import create_app

    return create_app()


def pointed_at(template: Path, upstream_port: int, dest: Path) -> Path:
    """A copy of `template` (a routing file, a LiteLLM config) at `dest` whose upstreams,
    written as 127.0.0.1:9100, are the fake upstream on `upstream_port`."""
    dest.write_text(template.read_text().replace("127.0.0.1:9100/", f"127.0.0.1:{upstream_port}/"))
    return dest


def routing_env(routing_file: Path, upstream_port: int, workdir: Path) -> dict[str, str]:
    """The variables that put this service on `routing_file` (its deployments pointed at
    the upstream on `upstream_port`): ROUTING_FILE, and the key variable it names."""
    copy = pointed_at(routing_file, upstream_port, workdir / f"routing-{upstream_port}.yaml")
    return {"ROUTING_FILE": str(copy), "BENCH_UPSTREAM_KEY": "bench-not-a-real-key"}


def wait_http(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.25)
    raise SystemExit(f"{url} did not come up in {seconds} s")


class Process:
    """A child process in its own process group, stopped with SIGTERM at exit."""

    def __init__(self, name: str, command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT):
        self.name = name
        self.log_path = RESULTS / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()

    def worker_pids(self) -> list[int]:
        """The pids of this process's workers (gunicorn's or uvicorn's), else its own."""
        pids = _children(self.proc.pid)
        # With several workers LiteLLM's uvicorn forks them below its own child.
        nested = [grandchild for pid in pids for grandchild in _children(pid)]
        # Only live processes (a finished helper lingers as a zombie without memory).
        live = [pid for pid in (nested or pids) if rss_kib([pid])]
        return live or [self.proc.pid]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def rss_kib(pids: list[int]) -> list[int]:
    """Resident memory of each live pid, KiB (pids that are gone or zombies are skipped)."""
    sizes = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                sizes += [int(line.split()[1]) for line in status if line.startswith("VmRSS:")]
        except FileNotFoundError:
            continue
    return sizes


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(name: str, url: str, body: str, clients: int, seconds: int, key: str | None = None) -> dict:
    """Run wrk; return p50/p99 latency (ms), requests/s and failures."""
    threads = min(2, clients)
    command = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds}s", "--timeout", "30s", "--latency"]
    command += ["-s", str(BENCH / "post.lua"), url, "--", body] + ([key] if key else [])
    out = subprocess.run(pinned(CLIENT_CPUS, command), capture_output=True, text=True, check=True).stdout
    (RESULTS / f"wrk-{name}.txt").write_text(" ".join(command[:-2]) + "\n\n" + out)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": total,
        "failed": (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, errors.groups())) if errors else 0),
    }


def ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        log("installing LiteLLM's proxy into bench/.venv-litellm (first run only)")
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return binary


def start_ours(
    stack: ExitStack,
    name: str,
    port: int,
    upstream_port: int,
    workdir: Path,
    require_key: bool = False,
    routing: bool = False,
) -> tuple[Process, str | None]:
    """This service under gunicorn; with `require_key`, REQUIRE_API_KEY on and a client key
    made for wrk; with `routing`, on bench/routing.yaml."""
    db = workdir / f"{name}.db"
    env = {k: v for k, v in os.environ.items() if k not in _TUNING}
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{db}",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
            "OPENAI_API_KEY": "bench-not-a-real-key",
            "OPENAI_MODEL": "fake-model",
            "WEB_CONCURRENCY": os.environ.get("BENCH_WORKERS", "1"),
            "RATELIMIT_ENABLED": "false",  # LiteLLM runs without limits too
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"{name}-metrics"),
            "REQUIRE_API_KEY": "true" if require_key else "false",
        }
    )
    if routing:
        env.update(routing_env(ROUTING_FILE, upstream_port, workdir))
    if WORKER_CLASS != "gevent":
        # A thread per client waiting on a slow upstream; no connection is held while the
        # LLM works, so a small pool serves every thread.
        env["GUNICORN_WORKER_CLASS"] = WORKER_CLASS
        env["GUNICORN_THREADS"] = os.environ.get("BENCH_THREADS", "600")
        env["DATABASE_POOL_SIZE"] = "8"
    subprocess.run(
        [str(VENV / "flask"), "--app", "app", "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    key = None
    if require_key:
        created = subprocess.run(
            [str(VENV / "flask"), "--app", "app", "keys", "create", "--name", "bench"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        key = created.stdout.strip()
    process = Process(
        name, pinned(SERVER_CPUS, [str(VENV / "gunicorn"), "-c", "gunicorn.conf.py", "app:create_app()"]), env
    )
    stack.callback(process.stop)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return process, key


def start_litellm(
    stack: ExitStack, name: str, port: int, upstream_port: int, workdir: Path, routing: bool = False
) -> Process:
    """LiteLLM's proxy on bench/litellm_config.yaml (one deployment), or with `routing` on
    bench/litellm_router.yaml (its Router), pointed at the upstream on `upstream_port`."""
    template = LITELLM_ROUTER_CONFIG if routing else LITELLM_CONFIG
    config = pointed_at(template, upstream_port, workdir / f"{name}.yaml")
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
    }
    workers = os.environ.get("BENCH_WORKERS", "1")
    command = [str(ensure_litellm()), "--config", str(config), "--port", str(port), "--num_workers", workers]
    process = Process(name, pinned(SERVER_CPUS, command), env, cwd=workdir)
    stack.callback(process.stop)
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", seconds=180)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark this service against LiteLLM's proxy.")
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test of the harness)")
    parser.add_argument("--memory-requests", type=int, default=50_000, help="0 skips the memory run")
    parser.add_argument("--no-peer", action="store_true", help="measure this service only (no LiteLLM)")
    parser.add_argument(
        "--routing", action="store_true", help="route: ours on bench/routing.yaml, LiteLLM on litellm_router.yaml"
    )
    args = parser.parse_args()
    seconds = 5 if args.quick else 15
    RESULTS.mkdir(exist_ok=True)
    results: dict = {"machine": {"cpus": os.cpu_count()}, "overhead": {}, "capacity": {}, "memory": {}}
    results["worker_class"] = WORKER_CLASS
    results["routing"] = args.routing
    log(f"this service on the {WORKER_CLASS} worker")

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        for port, delay in ((9100, "0"), (9101, "1")):
            upstream = Process(
                f"upstream-{delay}s",
                pinned(
                    CLIENT_CPUS,
                    [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(port), "--delay", delay],
                ),
            )
            stack.callback(upstream.stop)
        wait_http("http://127.0.0.1:9100/v1/models")
        wait_http("http://127.0.0.1:9101/v1/models")
        routing = args.routing
        if routing:
            log("routing: ours on bench/routing.yaml, LiteLLM on bench/litellm_router.yaml")
        ours = {
            0: start_ours(stack, "ours-0s", 9200, 9100, workdir, routing=routing)[0],
            1: start_ours(stack, "ours-1s", 9201, 9101, workdir, routing=routing)[0],
        }
        # The same service with client keys required: each request also looks its key up.
        _, bench_key = start_ours(stack, "ours-key-0s", 9202, 9100, workdir, require_key=True, routing=routing)
        peer = {}
        if not args.no_peer:
            peer = {
                0: start_litellm(stack, "litellm-0s", 9300, 9100, workdir, routing=routing),
                1: start_litellm(stack, "litellm-1s", 9301, 9101, workdir, routing=routing),
            }
        targets = {
            "direct": ("http://127.0.0.1:9100/v1/chat/completions", OPENAI_BODY, None),
            "ours": ("http://127.0.0.1:9200/openai-completion", OURS_BODY, None),
            "ours-v1": ("http://127.0.0.1:9200/v1/chat/completions", OPENAI_BODY, None),
            "ours-key": ("http://127.0.0.1:9202/openai-completion", OURS_BODY, bench_key),
            "litellm": ("http://127.0.0.1:9300/v1/chat/completions", OPENAI_BODY, LITELLM_KEY),
        }
        if args.no_peer:
            del targets["litellm"]

        # 1. Overhead at delay 0: each target warmed up first, then measured.
        for clients in (1, 32):
            for name, (url, body, key) in targets.items():
                wrk(f"warmup-{name}-{clients}", url, body, clients, 3, key)
                log(f"overhead: {name}, {clients} client(s)")
                results["overhead"][f"{name}-{clients}"] = wrk(
                    f"overhead-{name}-c{clients}", url, body, clients, seconds, key
                )

        # 2. Capacity with a 1 s upstream.
        slow = {
            "ours": ("http://127.0.0.1:9201/openai-completion", OURS_BODY, None),
            "litellm": ("http://127.0.0.1:9301/v1/chat/completions", OPENAI_BODY, LITELLM_KEY),
        }
        if args.no_peer:
            del slow["litellm"]
        for clients in (64, 256, 512):
            for name, (url, body, key) in slow.items():
                log(f"capacity: {name}, {clients} clients")
                run = wrk(f"capacity-{name}-c{clients}", url, body, clients, max(seconds, 20), key)
                run["ideal_rps"] = clients / 1.0
                run["of_ideal"] = run["rps"] / run["ideal_rps"]
                results["capacity"][f"{name}-{clients}"] = run

        # 3. Memory: worker RSS before and after N requests at delay 0.
        servers = [("ours", ours[0])] + ([("litellm", peer[0])] if peer else [])
        for name, process in servers if args.memory_requests else []:
            url, body, key = targets[name]
            pids = process.worker_pids()
            before = rss_kib(pids)
            log(f"memory: {name}, {args.memory_requests} requests")
            done = 0
            while done < args.memory_requests:
                done += wrk(f"memory-{name}", url, body, 32, 10 if not args.quick else 3, key)["requests"]
            after = rss_kib(pids)
            if not before or not after:
                raise SystemExit(f"memory: no worker RSS for {name} (pids {pids}, {before} -> {after})")
            results["memory"][name] = {
                "pids": pids,
                "requests": done,
                "rss_before_kib": before,
                "rss_after_kib": after,
                "growth": (sum(after) - sum(before)) / sum(before),
            }

    name = os.environ.get("BENCH_NAME", "results")
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    print(markdown(results))


def markdown(results: dict) -> str:
    o, c, m = results["overhead"], results["capacity"], results["memory"]
    worker = results.get("worker_class", "gthread")
    lines = [f"Ours: gunicorn's {worker} worker, 1 process, SQLite.", ""]
    lines += ["### 1. Overhead (upstream delay 0; latency minus the direct call's)", ""]
    lines += [
        "| clients | direct p50 / p99 | ours p50 / p99 | ours overhead p50 / p99 "
        "| LiteLLM p50 / p99 | LiteLLM overhead p50 / p99 | LiteLLM / ours (p50 overhead) |"
    ]
    lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
    none = {"p50_ms": float("nan"), "p99_ms": float("nan"), "rps": float("nan"), "of_ideal": float("nan"), "failed": 0}
    for clients in (1, 32):
        d, u, p = o[f"direct-{clients}"], o[f"ours-{clients}"], o.get(f"litellm-{clients}", none)
        ours_over = (u["p50_ms"] - d["p50_ms"], u["p99_ms"] - d["p99_ms"])
        peer_over = (p["p50_ms"] - d["p50_ms"], p["p99_ms"] - d["p99_ms"])
        ratio = peer_over[0] / ours_over[0] if ours_over[0] > 0 else float("nan")
        lines.append(
            f"| {clients} | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} ms | {u['p50_ms']:.2f} / {u['p99_ms']:.2f} ms "
            f"| **{ours_over[0]:.2f} / {ours_over[1]:.2f} ms** | {p['p50_ms']:.2f} / {p['p99_ms']:.2f} ms "
            f"| {peer_over[0]:.2f} / {peer_over[1]:.2f} ms | {ratio:.1f}x |"
        )
    for label, name in (("ours at /v1/chat/completions", "ours-v1"), ("ours with a client key", "ours-key")):
        for clients in (1, 32):
            d, k = o[f"direct-{clients}"], o.get(f"{name}-{clients}")
            if k:
                lines.append(
                    f"| {clients}, {label} | | {k['p50_ms']:.2f} / {k['p99_ms']:.2f} ms "
                    f"| **{k['p50_ms'] - d['p50_ms']:.2f} / {k['p99_ms'] - d['p99_ms']:.2f} ms** | | | |"
                )
    lines += ["", "Throughput at delay 0 (req/s): " + ", ".join(f"{k} {v['rps']:.0f}" for k, v in o.items()), ""]
    failed = {k: v["failed"] for k, v in o.items() if v["failed"]}
    if failed:
        lines += [f"Failed requests (non-2xx or socket errors): {failed}", ""]
    lines += ["### 2. Capacity (upstream delay 1 s; ideal = clients / 1 s)", ""]
    lines += [
        "| clients | ideal req/s | ours req/s (of ideal) | ours p99 "
        "| LiteLLM req/s (of ideal) | LiteLLM p99 | ours / LiteLLM throughput |"
    ]
    lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
    for clients in (64, 256, 512):
        u, p = c[f"ours-{clients}"], c.get(f"litellm-{clients}", none)
        lines.append(
            f"| {clients} | {clients} | {u['rps']:.0f} ({u['of_ideal']:.0%}) | {u['p99_ms'] / 1000:.2f} s "
            f"| {p['rps']:.0f} ({p['of_ideal']:.0%}) | {p['p99_ms'] / 1000:.2f} s | {u['rps'] / p['rps']:.2f}x |"
            + ("" if not (u["failed"] or p["failed"]) else f" failed: ours {u['failed']}, LiteLLM {p['failed']}")
        )
    lines += ["", "### 3. Memory (worker RSS, delay 0)", ""]
    lines += ["| server | requests | RSS before (MiB) | RSS after (MiB) | growth |", "| --- | --- | --- | --- | --- |"]
    for name, row in m.items():
        lines.append(
            f"| {name} | {row['requests']} | {sum(row['rss_before_kib']) / 1024:.1f} | "
            f"{sum(row['rss_after_kib']) / 1024:.1f} | {row['growth']:+.1%} |"
        )
    lines += ["", *against_targets(results)]
    return "\n".join(lines)


def against_targets(results: dict) -> list[str]:
    """Issue 12's targets for short requests: each with what was measured and whether it is met."""
    o, c, m = results["overhead"], results["capacity"], results["memory"]
    rows = []
    for route, name in (("/openai-completion", "ours"), ("/v1/chat/completions", "ours-v1")):
        run, direct = o.get(f"{name}-1"), o["direct-1"]
        if run:
            over = run["p50_ms"] - direct["p50_ms"]
            rows.append(
                (
                    f"{route} overhead p50 <= {TARGET_OVERHEAD_P50_MS} ms at 1 client",
                    f"{over:.2f} ms",
                    met(over <= TARGET_OVERHEAD_P50_MS),
                )
            )
    peer = o.get("litellm-32")
    for route, name in (("/openai-completion", "ours"), ("/v1/chat/completions", "ours-v1")):
        run = o.get(f"{name}-32")
        if not run:
            continue
        if peer:
            ratio = run["rps"] / peer["rps"]
            measured = f"{ratio:.2f}x ({run['rps']:.0f} / {peer['rps']:.0f} req/s)"
            rows.append(
                (
                    f"{route} req/s >= {TARGET_VS_LITELLM_RPS:g}x LiteLLM's at 32 clients, delay 0",
                    measured,
                    met(ratio >= TARGET_VS_LITELLM_RPS),
                )
            )
        else:
            rows.append(
                (
                    f"{route} req/s >= {TARGET_VS_LITELLM_RPS:g}x LiteLLM's at 32 clients, delay 0",
                    f"{run['rps']:.0f} req/s (LiteLLM not run)",
                    met(None),
                )
            )
    cap = c.get("ours-256")
    if cap:
        peer_cap = c.get("litellm-256")
        measured = f"{cap['of_ideal']:.0%}" + (f" (LiteLLM {peer_cap['of_ideal']:.0%})" if peer_cap else "")
        rows.append(
            (
                f">= {TARGET_OF_IDEAL_256:.0%} of ideal at 256 clients, 1 s delay",
                measured,
                met(cap["of_ideal"] >= TARGET_OF_IDEAL_256),
            )
        )
    mem = m.get("ours")
    if mem:
        peer_mem = m.get("litellm")
        measured = f"{mem['growth']:+.1%} over {mem['requests']:,} requests"
        measured += f" (LiteLLM {peer_mem['growth']:+.1%})" if peer_mem else ""
        enough = mem["requests"] >= TARGET_RSS_REQUESTS
        rows.append(
            (
                f"worker RSS growth < {TARGET_RSS_GROWTH:.0%} over {TARGET_RSS_REQUESTS:,} requests",
                measured + ("" if enough else " (fewer requests than the target's)"),
                met(mem["growth"] < TARGET_RSS_GROWTH) if enough else met(None),
            )
        )
    return targets_table("### Against the targets (issue 12, short requests)", rows)


def met(ok: bool | None) -> str:
    """A target's verdict: met, missed, or not measurable in this run."""
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def targets_table(title: str, rows: list[tuple[str, str, str]]) -> list[str]:
    """Markdown lines: `title`, then one row per (target, measured, verdict)."""
    lines = [title, "", "| target | measured | met? |", "| --- | --- | --- |"]
    return lines + [f"| {target} | {measured} | {verdict} |" for target, measured, verdict in rows]


if __name__ == "__main__":
    main()
