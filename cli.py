"""Flask CLI commands: `flask conversation ...`, `flask messages prune|sweep`, `flask keys ...`,
`flask admins ...`."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy.exc import IntegrityError

from database import unit_of_work
from services.admins import create_admin, delete_admin, list_admins
from services.client_keys import check_rate_limit, create_key, key_id_for, list_keys, revoke_key
from services.console.audit import record_action
from services.conversations import conversation_rows, delete_conversation, prune_batch, rows_batch
from services.ownership import ANY_KEY, KeyScope
from services.prices import parse_usd
from services.sweeper import cutoff, sweep

conversation_cli = AppGroup("conversation", help="Inspect stored conversations.")


def _key_scope(prefix: str | None) -> KeyScope:
    """The rows `--key PREFIX` selects: that client key's, or every key's without it."""
    if prefix is None:
        return ANY_KEY
    with unit_of_work(write=False) as session:
        key_id = key_id_for(session, prefix)
    if key_id is None:
        raise click.BadParameter(f"no key with prefix {prefix!r}", param_hint="--key")
    return key_id


# A user_id names one conversation per client key; operators see every key's unless narrowed.
key_option = click.option(
    "--key",
    "key_prefix",
    metavar="PREFIX",
    help="Only the conversation of this client key (default: the user_id under every key).",
)


@conversation_cli.command("show")
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row instead of text.")
@key_option
def show_conversation(user_id: str, as_json: bool, key_prefix: str | None) -> None:
    """Print every stored row of USER_ID, oldest first, failed exchanges included."""
    scope = _key_scope(key_prefix)
    with unit_of_work(write=False) as session:
        rows = [(row, row.to_dict()) for row in conversation_rows(session, user_id, scope)]
    if not rows:
        raise click.ClickException(f"No conversation stored for user_id {user_id!r}")
    for row, data in rows:
        if as_json:
            click.echo(json.dumps(data, ensure_ascii=False))
            continue
        content = row.content if isinstance(row.content, str) else json.dumps(row.content, ensure_ascii=False)
        extra = ""
        if row.role == "assistant":
            extra = f" [{row.model}, {row.total_tokens} tokens]"
        if row.role == "compaction":  # a summary of every exchange up to the row it names
            through = (row.message_fields or {}).get("compacts_through")
            extra = f" [summary of the conversation through {through}; {row.model}, {row.total_tokens} tokens]"
        elif row.status != "completed":
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
    # Each batch is its own short transaction, so live traffic (and SQLite's one writer)
    # waits at most one batch at a time.
    deleted = 0
    while True:
        with unit_of_work() as session:
            batch = prune_batch(session, cutoff, batch_size)
        if batch is None:
            break
        deleted += batch
    click.echo(f"Deleted {deleted} message rows older than {cutoff.isoformat(timespec='seconds')}")


@messages_cli.command("sweep")
@click.option(
    "--older-than",
    "older_than",
    help="Age such as 30m or 2h (default: ABANDON_AFTER_SECONDS, derived from the upstream's timeout).",
)
def sweep_messages(older_than: str | None) -> None:
    """Close exchanges still pending past the cut-off (their process died) as abandoned and
    charge their keys the estimated prompt tokens; what every worker does periodically."""
    before = datetime.now(UTC) - parse_age(older_than) if older_than else cutoff(current_app.config)
    result = sweep(before)
    if result.skipped:
        click.echo("Another sweeper is at work right now; nothing done. Run it again later.", err=True)
    click.echo(
        f"Closed {result.exchanges} exchanges pending since before {before.isoformat(timespec='seconds')} "
        f"as abandoned; charged keys {result.charged_tokens} estimated prompt tokens"
    )


@conversation_cli.command("delete")
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@key_option
def delete_conversation_command(user_id: str, yes: bool, key_prefix: str | None) -> None:
    """Erase every stored row of USER_ID."""
    scope = _key_scope(key_prefix)
    if not yes:
        click.confirm(f"Erase every message of {user_id!r}?", abort=True)
    with unit_of_work() as session:
        deleted = delete_conversation(session, user_id, scope)
    if not deleted:
        raise click.ClickException(f"No conversation stored for user_id {user_id!r}")
    click.echo(f"Deleted {deleted} message rows of {user_id!r}")


def iter_rows(
    conversation_id: str | None = None, scope: KeyScope = ANY_KEY, batch_size: int = 1000
) -> Iterator[dict[str, Any]]:
    """Every stored row (of one conversation when given), by conversation then id, read a
    batch per short read-only unit of work, never the whole table in one transaction."""
    after = ("", 0)
    while True:
        with unit_of_work(write=False) as session:
            batch = rows_batch(session, after, conversation_id, scope, batch_size)
        if not batch:
            return
        yield from batch
        after = (batch[-1]["user_id"], batch[-1]["row_id"])


@conversation_cli.command("export")
@click.argument("user_id", required=False)
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("--output", type=click.File("w"), default="-", help="File to write (default: standard output).")
@key_option
def export_conversations(user_id: str | None, fmt: str, output, key_prefix: str | None) -> None:
    """Write every stored row (of USER_ID, or of everyone) as one JSON object per line, for audits."""
    count = 0
    for row in iter_rows(user_id, _key_scope(key_prefix)):
        output.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    if user_id is not None and not count:
        raise click.ClickException(f"No conversation stored for user_id {user_id!r}")


keys_cli = AppGroup("keys", help="Client API keys: create, list, revoke.")


def _rate_limit_option(ctx, param, value: str | None) -> str | None:
    try:
        return check_rate_limit(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _usd_option(ctx, param, value: str | None) -> int | None:
    try:
        return parse_usd(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@keys_cli.command("create")
@click.option("--name", required=True, help="Who the key is for (shown in `flask keys list`).")
@click.option(
    "--rate",
    callback=_rate_limit_option,
    help="Its own rate limit, e.g. '100 per minute' (default: RATELIMIT_DEFAULT).",
)
@click.option(
    "--daily-tokens", type=click.IntRange(min=1), help="Tokens it may spend per UTC day (default: no budget)."
)
@click.option("--daily-usd", callback=_usd_option, help="USD it may spend per UTC day, e.g. 5 (default: no budget).")
@click.option("--monthly-usd", callback=_usd_option, help="USD it may spend per UTC month (default: no budget).")
def create_key_command(
    name: str, rate: str | None, daily_tokens: int | None, daily_usd: int | None, monthly_usd: int | None
) -> None:
    """Create a key and print it. It is shown this once: only its hash is stored."""
    if not name.strip() or len(name) > 100:
        raise click.BadParameter("must be 1 to 100 characters", param_hint="--name")
    with unit_of_work() as session:
        record, key = create_key(session, name.strip(), rate, daily_tokens, daily_usd, monthly_usd)
    click.echo(key)
    money = "".join(
        f", {label} USD {record[field]}"
        for label, field in (("daily", "daily_usd"), ("monthly", "monthly_usd"))
        if record[field] is not None
    )
    click.echo(
        f"Created key {record['prefix']} for {record['name']!r} "
        f"(rate {record['rate_limit'] or 'default'}, daily tokens {record['daily_tokens'] or 'unlimited'}{money}). "
        "Store it now: it cannot be shown again.",
        err=True,
    )


@keys_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key instead of a table.")
def list_keys_command(as_json: bool) -> None:
    """Every key: prefix, name, limits, today's usage (tokens, USD; and USD this month) and
    whether it is revoked."""
    with unit_of_work(write=False) as session:
        keys = list_keys(session)
    if as_json:
        for key in keys:
            click.echo(json.dumps(key))
        return
    click.echo(
        f"{'PREFIX':<13}{'NAME':<24}{'RATE':<20}{'DAILY TOKENS':>13}{'USED TODAY':>12}"
        f"{'DAILY USD':>11}{'USD TODAY':>11}{'MONTHLY USD':>13}{'USD MONTH':>11}  STATUS"
    )
    for key in keys:
        status = f"revoked {key['revoked_at']}" if key["revoked_at"] else "active"
        daily = key["daily_tokens"] if key["daily_tokens"] is not None else "-"
        money = [_dollars(key[name]) for name in ("daily_usd", "usd_today", "monthly_usd", "usd_this_month")]
        click.echo(
            f"{key['prefix']:<13}{key['name'][:23]:<24}{(key['rate_limit'] or 'default')[:19]:<20}"
            f"{daily:>13}{key['tokens_today']:>12}{money[0]:>11}{money[1]:>11}{money[2]:>13}{money[3]:>11}  {status}"
        )


def _dollars(amount: float | None) -> str:
    return "-" if amount is None else f"{amount:.6f}".rstrip("0").rstrip(".")


@keys_cli.command("revoke")
@click.argument("prefix")
def revoke_key_command(prefix: str) -> None:
    """Revoke the key with this PREFIX (as `flask keys list` shows it); refused from the next request."""
    with unit_of_work() as session:
        revoked = revoke_key(session, prefix)
    if revoked is None:
        raise click.ClickException(f"No key with prefix {prefix!r}")
    click.echo(f"Revoked key {revoked['prefix']} ({revoked['name']!r}) at {revoked['revoked_at']}")


admins_cli = AppGroup("admins", help="Admins of the web console (README: Console): create, list, delete.")


@admins_cli.command("create")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of making one.")
def create_admin_command(name: str, password_stdin: bool) -> None:
    """Create the console admin NAME and print its password (made at random unless given
    on standard input). It is shown this once: only a slow hash of it is stored."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    try:
        with unit_of_work() as session:
            record, password = create_admin(session, name, password)
            record_action(session, "cli", "admin.create", record["name"])
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except IntegrityError:
        raise click.ClickException(f"An admin named {name.strip()!r} exists already") from None
    if not password_stdin:
        click.echo(password)
    click.echo(f"Created console admin {record['name']!r}. Sign in at /console (CONSOLE_ENABLED=true).", err=True)


@admins_cli.command("list")
def list_admins_command() -> None:
    """Every console admin: name and creation time."""
    with unit_of_work(write=False) as session:
        for admin in list_admins(session):
            click.echo(f"{admin['name']}\t{admin['created_at']}")


@admins_cli.command("delete")
@click.argument("name")
def delete_admin_command(name: str) -> None:
    """Delete the console admin NAME; its open sessions end at their next request."""
    with unit_of_work() as session:
        deleted = delete_admin(session, name)
        if deleted:
            record_action(session, "cli", "admin.delete", name)
    if not deleted:
        raise click.ClickException(f"No admin named {name!r}")
    click.echo(f"Deleted console admin {name!r}")


def register_commands(app: Flask) -> None:
    """Attach the CLI groups to `app`."""
    app.cli.add_command(conversation_cli)
    app.cli.add_command(messages_cli)
    app.cli.add_command(keys_cli)
    app.cli.add_command(admins_cli)
