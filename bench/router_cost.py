"""The router's own work per call, piece by piece, in instructions (valgrind callgrind).

    .venv/bin/python bench/router_cost.py                                   # no routing file
    .venv/bin/python bench/router_cost.py --routing-file bench/routing.yaml # the bench's routed setup

bench/instructions.py counts whole requests, which callgrind can only attribute to
CPython's C functions (`_PyEval_EvalFrameDefault`, dict lookups), not to Python ones. This
counts the router's pieces one by one instead, in one process: the app is built as
bench/instructions.py builds it (gevent-patched, SQLite; with --routing-file, that
routing file), every deployment's client is replaced by a stub that answers at once (no
SDK, no HTTP), and each piece is called --calls times between two markers (the last two
pieces are not the router's: the metric and the row the pipeline makes of each attempt). A marker is a
call of `os.getppid()`, and callgrind dumps its counters on entering it
(`--dump-before=os_getppid*`), so each dump between two markers holds one piece's calls
and nothing else. An empty call is counted the same way and subtracted (the loop's own
cost). Prints one JSON line per piece: instructions per call.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
MODEL = "fake-model"
MESSAGES = [{"role": "user", "content": "Say something short."}]
# A conversation's history as /openai-completion sends it after 10 exchanges.
HISTORY = [
    {"role": role, "content": "Say something short." if role == "user" else "benchmark reply"}
    for _ in range(10)
    for role in ("user", "assistant")
] + MESSAGES
WARM_UP = 50


def _mark() -> None:
    os.getppid()  # callgrind dumps here (--dump-before=os_getppid*)


def serve(calls: int, routing_file: str) -> None:
    """The counted process: build the app, stub the deployments, count each piece."""
    from gevent import monkey

    monkey.patch_all()
    sys.path.insert(0, str(BENCH))
    from run import in_process_app

    tmp = tempfile.mkdtemp(prefix="bench-router-cost-")
    app = in_process_app(tmp, 9, Path(routing_file) if routing_file else None)  # port 9: nothing is called
    from services.llm.types import Completion

    completion = Completion(
        text="benchmark reply",
        model=MODEL,
        completion_id="chatcmpl-bench",
        prompt_tokens=12,
        completion_tokens=3,
        total_tokens=15,
        raw={"id": "chatcmpl-bench"},
        finish_reason="stop",
    )
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": MODEL}
    chunks = [{**chunk, "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}]} for i in range(20)]
    chunks.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({**chunk, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 20}})

    class StubChat:
        """A deployment's client that answers at once."""

        def complete(self, messages, *, model, **params):
            return completion

        def stream(self, messages, *, model, watch, **params):
            return iter(chunks), lambda: None

        def describe(self) -> str:
            return "stub"

        def close(self) -> None:
            pass

    llm = app.extensions["llm"]
    stub = StubChat()
    for target in llm.pool.deployments():
        target.chat = stub
    pool = llm.pool
    target = pool.deployments()[0]
    group = llm.group_of(MODEL)

    def first_pick():
        call = llm._call(MODEL, MESSAGES, {})
        return next(call.tries())

    call = llm._call(MODEL, MESSAGES, {})
    attempt = call._attempt(target, 0.0, "ok")
    now = datetime.now(UTC)
    from extensions import db
    from services.exchanges import record_attempts
    from telemetry import UPSTREAM_ATTEMPTS

    def busy():
        with pool.busy(target):
            pass

    def consume_stream():
        for _ in llm.stream(MESSAGES, model=MODEL):
            pass

    pieces = {
        "empty call (subtracted from the others)": lambda: None,
        "stub.complete (what the router wraps)": lambda: stub.complete(MESSAGES, model=MODEL),
        "Router.complete, all of it": lambda: llm.complete(MESSAGES, model=MODEL),
        "Router._call: RoutedCall() (Pool.needs, Pool.chain)": lambda: llm._call(MODEL, MESSAGES, {}),
        "Pool.needs (estimate_message_tokens, completion_cap)": lambda: pool.needs(MESSAGES, {}),
        "Pool.needs, a 10-exchange history (21 messages)": lambda: pool.needs(HISTORY, {}),
        "Pool.chain": lambda: pool.chain(group),
        "RoutedCall() + first tries() step (_pick)": first_pick,
        "Pool.ordered": lambda: pool.ordered(group),
        "Breakers.states of the group": lambda: pool.breakers.states([t.name for t in pool.targets[group]]),
        "Target.timeout (httpx2.Timeout)": lambda: target.timeout(60.0, stream=False),
        "Pool.busy (lock, in_flight)": busy,
        "RoutedCall._attempt (an Attempt)": lambda: call._attempt(target, 0.0, "ok"),
        "dataclasses.replace(completion, deployment, attempts)": lambda: dataclasses.replace(
            completion, deployment=target.name, attempts=()
        ),
        "Router.stream, 22 chunks consumed": consume_stream,
        # Not the router's: what the pipeline does with each request's attempts.
        "(recording) UPSTREAM_ATTEMPTS.labels().inc()": lambda: UPSTREAM_ATTEMPTS.labels(
            deployment=target.name, outcome="ok"
        ).inc(),
        "(recording) record_attempts, one row, in an open transaction": lambda: record_attempts(
            db.session, "bench-exchange", [attempt.as_row()], now
        ),
    }
    print(json.dumps(list(pieces)), flush=True)
    with app.app_context():
        for piece in pieces.values():
            for _ in range(WARM_UP):
                piece()
            _mark()
            for _ in range(calls):
                piece()
            _mark()
        db.session.rollback()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routing-file", help="the app's ROUTING_FILE (as bench/instructions.py)")
    parser.add_argument("--calls", type=int, default=2000, help="calls of each piece")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)  # internal: the counted process
    args = parser.parse_args()
    if args.serve:
        calls, routing_file = args.serve
        return serve(int(calls), routing_file)
    routing_file = str(Path(args.routing_file).resolve()) if args.routing_file else ""
    with tempfile.TemporaryDirectory(prefix="bench-router-cost-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        command = ["valgrind", "--tool=callgrind", "--dump-before=os_getppid*", f"--callgrind-out-file={out}"]
        command += [sys.executable, str(Path(__file__).resolve()), "--serve", str(args.calls), routing_file]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        run = subprocess.run(command, capture_output=True, text=True, env=env)
        if run.returncode:
            raise SystemExit(f"callgrind run failed ({run.returncode}):\n{run.stderr[-2000:]}")
        names = json.loads(run.stdout.strip().splitlines()[-1])
        parts = {}
        for path in glob.glob(out + ".*"):
            text = Path(path).read_text(errors="replace")
            parts[int(path.rsplit(".", 1)[1])] = int(re.search(r"^summary: (\d+)", text, re.MULTILINE).group(1))
    # Dump 1 is start-up; then, per piece, its warm-up (odd) and its counted calls (even).
    counts = [parts[2 * (i + 1)] / args.calls for i in range(len(names))]
    for index, (name, count) in enumerate(zip(names, counts, strict=True)):
        row = {"piece": name, "instructions_per_call": round(count - (counts[0] if index else 0))}
        print(json.dumps(row | ({"routing_file": args.routing_file} if routing_file else {})), flush=True)


if __name__ == "__main__":
    main()
