"""Write docs/postman_collection.json from the service's OpenAPI document.

    .venv/bin/python docs/build_postman.py

A test (tests/test_api_contract.py) fails when the collection and the document disagree,
so run this after adding or changing a route.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EXAMPLES = {
    ("POST", "/openai-completion"): {"prompt": "Name three French cheeses.", "user_id": "alice"},
    ("POST", "/process-payload/"): {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "You are an AI assistant."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
        ],
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 800,
        "user_id": "alice",
    },
    ("POST", "/v1/chat/completions"): {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hello!"}],
    },
}


def build(document: dict) -> dict:
    """A Postman v2.1 collection with one request per documented operation, by tag."""
    folders: dict[str, list] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            segments = [s.replace("{", ":").replace("}", "") for s in path.strip("/").split("/")]
            if path.endswith("/"):
                segments.append("")
            request = {
                "method": method.upper(),
                "header": [{"key": "Content-Type", "value": "application/json"}],
                "url": {
                    "raw": "{{baseUrl}}/" + "/".join(segments),
                    "host": ["{{baseUrl}}"],
                    "path": segments,
                    "variable": [{"key": s[1:], "value": "alice"} for s in segments if s.startswith(":")],
                },
            }
            if not operation.get("security"):
                request["auth"] = {"type": "noauth"}  # health, metrics: open to anyone
            example = EXAMPLES.get((method.upper(), path))
            if example is not None:
                request["body"] = {
                    "mode": "raw",
                    "raw": json.dumps(example, indent=2),
                    "options": {"raw": {"language": "json"}},
                }
            tag = (operation.get("tags") or ["other"])[0]
            folders.setdefault(tag, []).append(
                {"name": operation.get("summary") or f"{method} {path}", "request": request}
            )
    return {
        "info": {
            "name": document["info"]["title"],
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        # Every request sends {{apiKey}} (from `flask keys create`) unless it is marked noauth.
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{apiKey}}", "type": "string"}]},
        "variable": [
            {"key": "baseUrl", "value": "http://127.0.0.1:5000"},
            {"key": "apiKey", "value": "", "description": "A client key; needed when REQUIRE_API_KEY is on"},
        ],
        "item": [{"name": tag, "item": items} for tag, items in folders.items()],
    }


def main() -> None:
    from app import create_app

    app = create_app({"APP_ENV": "testing", "LLM_OFFLINE": True, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    document = app.test_client().get("/openapi.json").get_json()
    target = ROOT / "docs" / "postman_collection.json"
    target.write_text(json.dumps(build(document), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
