"""The operator's web console (README "Console"): server-rendered pages at /console.

blueprint.py holds the blueprint and what guards it; each page's views are a module of
their own, imported here so that they join the blueprint before any app registers it.
"""

from routes.console import audit, conversations, keys, overview, requests, settings, sign_in, upstreams  # noqa: F401
from routes.console.blueprint import register_console

__all__ = ["register_console"]
