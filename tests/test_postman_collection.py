"""docs/postman_collection.json, run as its users run it: newman, in order, against a live server.

newman (Postman's command-line collection runner) is pinned in tests/postman/package-lock.json
and installed by `make install` (`npm ci --prefix tests/postman`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import ROOT, LiveServer, create_client_key

COLLECTION = ROOT / "docs" / "postman_collection.json"
NEWMAN = ROOT / "tests" / "postman" / "node_modules" / ".bin" / "newman"


def run_collection(collection: Path, base_url: str, report: Path, *env_vars: str) -> dict:
    """Run `collection` with newman against `base_url`; its JSON report's `run` section."""
    if not NEWMAN.exists():
        pytest.fail(f"{NEWMAN.relative_to(ROOT)} is missing: `make install` installs it (needs node and npm)")
    command = [str(NEWMAN), "run", str(collection), "--env-var", f"baseUrl={base_url}"]
    for env_var in env_vars:
        command += ["--env-var", env_var]
    command += ["--reporters", "cli,json", "--reporter-json-export", str(report), "--color", "off"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    print(result.stdout, result.stderr)  # newman's own table, shown when a test fails
    assert report.exists(), f"newman wrote no report (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    run = json.loads(report.read_text())["run"]
    # newman exits 1 exactly when something failed; the report must say the same.
    assert (result.returncode == 0) == (not run["failures"]), result.stdout
    return run


def requests_in(collection: dict) -> list[dict]:
    """The requests of a collection in the order a run sends them."""
    return [item for folder in collection["item"] for item in folder.get("item", [folder])]


def failed_assertions(run: dict) -> list[str]:
    return [
        f"{execution['item']['name']}: {assertion['assertion']}: {assertion['error']['message']}"
        for execution in run["executions"]
        for assertion in execution.get("assertions", [])
        if assertion.get("error")
    ]


def assert_every_request_ran_and_passed(run: dict, collection: dict) -> None:
    expected = [item["name"] for item in requests_in(collection)]
    assert [execution["item"]["name"] for execution in run["executions"]] == expected
    assert failed_assertions(run) == []
    assert run["failures"] == []
    assert run["stats"]["assertions"]["failed"] == 0
    assert run["stats"]["requests"]["total"] == len(expected)
    untested = [e["item"]["name"] for e in run["executions"] if not e.get("assertions")]
    assert untested == [], "requests with no Postman tests"
    assert run["stats"]["assertions"]["total"] == sum(len(e["assertions"]) for e in run["executions"])


def test_the_collection_runs_in_order_and_every_expectation_holds(live_server, tmp_path):
    collection = json.loads(COLLECTION.read_text())
    run = run_collection(COLLECTION, live_server.url, tmp_path / "report.json")
    assert_every_request_ran_and_passed(run, collection)
    codes = {
        (e["request"]["method"], "/" + "/".join(e["request"]["url"]["path"])): e["response"]["code"]
        for e in run["executions"]
    }
    # The order of the walk: alice's conversation is read while it exists, and erased last.
    assert codes[("GET", "/conversations/alice/usage")] == 200
    assert run["executions"][-1]["request"]["method"] == "DELETE"
    assert codes[("DELETE", "/conversations/alice")] == 204


def test_with_keys_required_the_collection_passes_given_its_api_key(make_app, tmp_path):
    app = make_app(REQUIRE_API_KEY=True)
    key = create_client_key(app)
    server = LiveServer(app)
    try:
        run = run_collection(COLLECTION, server.url, tmp_path / "report.json", f"apiKey={key}")
    finally:
        server.stop()
    assert_every_request_ran_and_passed(run, json.loads(COLLECTION.read_text()))


def test_the_run_fails_when_the_conversation_is_erased_before_its_usage_is_read(live_server, tmp_path):
    # The defect of issue 10 rebuilt: DELETE moved in front of the usage request.
    collection = json.loads(COLLECTION.read_text())
    items = requests_in(collection)
    erase = next(
        i for i in items if i["request"]["method"] == "DELETE" and i["request"]["url"]["path"][0] == "conversations"
    )
    usage = next(i for i in items if i["request"]["url"]["path"][-1] == "usage")
    items.remove(erase)
    items.insert(items.index(usage), erase)
    collection["item"] = items
    broken = tmp_path / "erased_first.json"
    broken.write_text(json.dumps(collection))

    run = run_collection(broken, live_server.url, tmp_path / "report.json")

    assert run["stats"]["assertions"]["failed"] > 0
    failures = failed_assertions(run)
    assert f"{usage['name']}: status is 200: expected response to have status code 200 but got 404" in failures


def test_a_route_the_builder_has_no_step_for_still_runs_and_is_tested_before_the_erasing_step():
    from docs.build_postman import STEPS, build

    document = {"info": {"title": "gateway"}, "paths": {}}
    for step in STEPS:
        operation = {"summary": f"{step.method} {step.path}", "responses": {"200": {}}, "security": [{}]}
        document["paths"].setdefault(step.path, {})[step.method.lower()] = operation
    document["paths"]["/v1/later"] = {"post": {"summary": "A route added later", "responses": {"200": {}}}}

    items = requests_in(build(document))

    names = [item["name"] for item in items]
    assert len(items) == len(STEPS) + 1
    added = names.index("A route added later")
    assert {item["request"]["method"] for item in items[added + 1 :]} == {"DELETE"}
    assert items[added]["event"][0]["listen"] == "test"
    assert items[added]["event"][0]["script"]["exec"] == [
        'pm.test("status is one of the documented [200]", function () { '
        "pm.expect(pm.response.code).to.be.oneOf([200]); });"
    ]
