"""Flask CLI commands: `flask conversation show USER_ID`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from services.conversation import conversation_rows, delete_conversation, iter_rows, prune_exchanges

conversation_cli = AppGroup("conversation", help="Inspect stored conversations.")


@conversation_cli.command("show")
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row instead of text.")
def show_conversation(user_id: str, as_json: bool) -> None:
    """Print every stored row of USER_ID, oldest first, failed exchanges included."""
    rows = conversation_rows(user_id)
    if not rows:
        raise click.ClickException(f"No conversation stored for user_id {user_id!r}")
    for row in rows:
        if as_json:
            click.echo(json.dumps(row.to_dict(), ensure_ascii=False))
            continue
        data = row.to_dict()
        content = row.content if isinstance(row.content, str) else json.dumps(row.content, ensure_ascii=False)
        extra = ""
        if row.role == "assistant":
            extra = f" [{row.model}, {row.total_tokens} tokens]"
        if row.status != "completed":
            extra += f" [{row.status}{': ' + row.error if row.error else ''}]"
        click.echo(f"{data['timestamp']} {row.role}{extra}: {content}")


messages_cli = AppGroup("messages", help="Maintain the messages table.")

_AGE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_age(text: str) -> timedelta:
    """'90d', '12h' or '30m' as a timedelta; click.BadParameter otherwise."""
    match = _AGE.match(text)
    if not match or int(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not an age such as 90d, 12h or 30m")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@messages_cli.command("prune")
@click.option("--older-than", "older_than", help="Age such as 90d, 12h or 30m (default: RETENTION_DAYS days).")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1), help="Exchanges per batch.")
def prune_messages(older_than: str | None, batch_size: int) -> None:
    """Delete whole exchanges that began before the cut-off, a short batch at a time."""
    age = parse_age(older_than) if older_than else timedelta(days=current_app.config["RETENTION_DAYS"])
    cutoff = datetime.now(UTC) - age
    deleted = prune_exchanges(cutoff, batch_size=batch_size)
    click.echo(f"Deleted {deleted} message rows older than {cutoff.isoformat(timespec='seconds')}")


@conversation_cli.command("delete")
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_conversation_command(user_id: str, yes: bool) -> None:
    """Erase every stored row of USER_ID."""
    if not yes:
        click.confirm(f"Erase every message of {user_id!r}?", abort=True)
    deleted = delete_conversation(user_id)
    if not deleted:
        raise click.ClickException(f"No conversation stored for user_id {user_id!r}")
    click.echo(f"Deleted {deleted} message rows of {user_id!r}")


@conversation_cli.command("export")
@click.argument("user_id", required=False)
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("--output", type=click.File("w"), default="-", help="File to write (default: standard output).")
def export_conversations(user_id: str | None, fmt: str, output) -> None:
    """Write every stored row (of USER_ID, or of everyone) as one JSON object per line, for audits."""
    count = 0
    for row in iter_rows(user_id):
        output.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    if user_id is not None and not count:
        raise click.ClickException(f"No conversation stored for user_id {user_id!r}")


def register_commands(app: Flask) -> None:
    """Attach the CLI groups to `app`."""
    app.cli.add_command(conversation_cli)
    app.cli.add_command(messages_cli)
