"""Flask CLI commands: `flask conversation show USER_ID`."""

from __future__ import annotations

import json

import click
from flask import Flask
from flask.cli import AppGroup

from services.conversation import conversation_rows

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


def register_commands(app: Flask) -> None:
    """Attach the CLI groups to `app`."""
    app.cli.add_command(conversation_cli)
