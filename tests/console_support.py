"""What the console's tests share: the service under gunicorn with the console on, an
admin made by the CLI, signing in through the page, screenshots (tests/screenshots/)."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import ROOT, Served, run_flask, upstream_service_env

SCREENSHOTS = ROOT / "tests" / "screenshots"  # git-ignored
ADMIN = "ops"
# Built at run time, like support.UPSTREAM_KEY: no secret-shaped literal in the repository.
SECRET_KEY = "console-test-" + "s" * 40


def chromium_path() -> str:
    """Debian's chromium, or a skip naming how to get it (.ci/run installs it)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed: browser tests skipped (apt-get install chromium; .ci/run does)")
    return path


@dataclass
class ConsoleService:
    """gunicorn serving the console and the API, and the admin the CLI made for it."""

    served: Served
    env: dict[str, str]
    password: str

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def database(self) -> Path:
        return Path(self.env["DATABASE_URL"].removeprefix("sqlite:///"))


def start_console_service(tmp_path: Path, upstream, **extra: str) -> ConsoleService:
    """Migrate, make the admin with `flask admins create`, then start gunicorn with the
    console on and client keys required."""
    # One worker: the pages are the same in every worker (tests/test_access_control.py shows a
    # revocation reaching all of them), and each worker more is an app import more.
    settings = {"WEB_CONCURRENCY": "1", **extra}
    env = upstream_service_env(
        tmp_path, upstream, CONSOLE_ENABLED="true", SECRET_KEY=SECRET_KEY, REQUIRE_API_KEY="true", **settings
    )
    migrated = run_flask(env, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    made = run_flask(env, "admins", "create", ADMIN)
    assert made.returncode == 0, made.stderr
    served = Served(env)
    served.wait_for("LLM upstream: OpenAI at", count=int(env["WEB_CONCURRENCY"]))
    return ConsoleService(served, env, made.stdout.strip())


def sign_in(page, service: ConsoleService, password: str | None = None) -> None:
    """Sign in through the sign-in page as the CLI's admin."""
    page.goto(f"{service.url}/console/sign-in")
    page.get_by_label("Name").fill(ADMIN)
    page.get_by_label("Password").fill(service.password if password is None else password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def screenshot(page, name: str) -> None:
    """Save the page as tests/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def csrf_token(html: str) -> str:
    """The first CSRF token a console page's forms carry."""
    match = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)
