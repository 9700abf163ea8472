"""Instructions per request, counted by valgrind: a figure the machine's noise cannot move.

    .venv/bin/python bench/instructions.py                       # every route (about 7 minutes)
    .venv/bin/python bench/instructions.py --routes openai-completion
    .venv/bin/python bench/instructions.py --routing-file bench/routing.yaml   # routed (issue 21)

CPU time on a shared 2-core VM moves 20-50% from one run to the next (bench/README.md),
so a change worth 5-10% cannot be seen with bench/cpu.py alone. `valgrind
--tool=callgrind` counts the instructions a process executes instead: the same code, input
and environment give the same count whatever else the machine does (PYTHONHASHSEED is
fixed). For each route this runs the app in-process twice under callgrind (built as
bench/cpu.py builds it: gevent-patched, SQLite, rate limits off, bench/fake_upstream.py as
the upstream, in its own process and not counted), once with --few and once with --many
requests after the same warm-up, and prints (many - few) / (many - few requests): the
instructions of one request, start-up and warm-up cancelled out. Needs valgrind
(`apt-get install valgrind`).

Without --routing-file the app has no ROUTING_FILE: the OPENAI_* upstream is the router's
one-deployment group. With --routing-file PATH (bench/routing.yaml: a group of three
deployments by priority and a fallback group), a copy of PATH whose deployments point at
the fake upstream is the app's ROUTING_FILE, to count what routing itself costs.
--callgrind-out DIR keeps each run's callgrind output (for `callgrind_annotate`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PROMPT = "Say something short."
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": PROMPT}]}
ROUTES = {
    "openai-completion": ("/openai-completion", {"prompt": PROMPT}),
    "chat-completions": ("/v1/chat/completions", CHAT),
    "chat-completions-streamed": ("/v1/chat/completions", {**CHAT, "stream": True}),
}
WARM_UP = 20


def serve_requests(route: str, count: int, upstream_port: int, routing_file: str) -> None:
    """The counted process: build the app and send WARM_UP + `count` requests of `route`."""
    from gevent import monkey

    monkey.patch_all()
    sys.path.insert(0, str(BENCH))
    from run import in_process_app

    tmp = tempfile.mkdtemp(prefix="bench-instructions-")
    client = in_process_app(tmp, upstream_port, Path(routing_file) if routing_file else None).test_client()
    path, body = ROUTES[route]
    for _ in range(WARM_UP + count):
        response = client.post(path, json=body)
        text = response.get_data(as_text=True)
        assert response.status_code == 200, text


def counted(route: str, count: int, upstream_port: int, routing_file: str = "", out: str = "/dev/null") -> int:
    """Instructions callgrind counts for one run of serve_requests."""
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    command += [str(Path(__file__).resolve()), "--serve", route, str(count), str(upstream_port), routing_file]
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode or not found:
        raise SystemExit(f"callgrind run failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated, of: {', '.join(ROUTES)}")
    parser.add_argument("--few", type=int, default=20)
    parser.add_argument("--many", type=int, default=220)
    parser.add_argument("--port", type=int, default=9555, help="the fake upstream's port")
    parser.add_argument("--routing-file", help="the app's ROUTING_FILE (its deployments pointed at the fake upstream)")
    parser.add_argument("--callgrind-out", help="a folder to keep each run's callgrind output in")
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)  # internal: the counted process
    args = parser.parse_args()
    if args.serve:
        route, count, port, routing_file = args.serve
        return serve_requests(route, int(count), int(port), routing_file)
    routing_file = str(Path(args.routing_file).resolve()) if args.routing_file else ""
    upstream = [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(args.port), "--stream-seconds", "0"]
    fake = subprocess.Popen(upstream, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sys.path.insert(0, str(BENCH))
        from run import wait_http

        wait_http(f"http://127.0.0.1:{args.port}/v1/models")
        for route in args.routes.split(","):
            runs = {}
            for count in (args.few, args.many):
                out = "/dev/null"
                if args.callgrind_out:
                    os.makedirs(args.callgrind_out, exist_ok=True)
                    out = os.path.join(args.callgrind_out, f"callgrind.{route}.{count}")
                runs[count] = counted(route, count, args.port, routing_file, out)
            per_request = (runs[args.many] - runs[args.few]) / (args.many - args.few)
            row = {"route": route, "instructions_per_request": round(per_request)}
            print(json.dumps(row | ({"routing_file": args.routing_file} if routing_file else {})), flush=True)
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
