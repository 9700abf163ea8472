"""JSON log lines with secrets scrubbed: the app's and gunicorn's own (gunicorn.conf.py).

Standard library only, so gunicorn's master can use it without importing the app.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

# Anything shaped like a secret key, OpenAI's (sk-...) or this service's client keys
# (gw_...); removed from every upstream message and log line.
# A client key's 12-character prefix is not a secret and stays readable.
_KEY_PATTERN = re.compile(r"\bsk-[A-Za-z0-9_\-*]{4,}|\bgw_[A-Za-z0-9_\-]{20,}")
# Line breaks json.dumps(ensure_ascii=False) writes as they are (it escapes only those below
# U+0020): NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR end a line for str.splitlines, some log
# shippers and viewers, so a client could start a forged line with one. Escaped as \n is.
_UNESCAPED_BREAKS = str.maketrans({"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def redact(text: str, secrets: Sequence[str | None] = ()) -> str:
    """Remove every configured secret and anything shaped like an API key from `text`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_PATTERN.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any structured fields."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = redact(json.dumps(entry, ensure_ascii=False, default=str), self._secrets)
        # Only inside a JSON string can these characters be, where their escape means the same.
        return line.translate(_UNESCAPED_BREAKS)
