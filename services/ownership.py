"""Whose rows a caller sees: a conversation lives within a client key.

A conversation is a conversation id (the `user_id` column, as the seed routes call it on
the wire) within a client key (`client_key_id`: the key's id, or None when keys are off):
two keys using the same id each have their own, and no store function reads or changes
another key's rows. Only the operator's CLI passes ANY_KEY.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Table, true

from models import Message

MESSAGES = Message.__table__


class _AnyKey:
    def __repr__(self) -> str:
        return "ANY_KEY"


# The operator's view (CLI): rows of every key. Requests always pass their own key.
ANY_KEY = _AnyKey()
KeyScope = int | None | _AnyKey


def owned_by(client_key_id: KeyScope, table: Table = MESSAGES) -> ColumnElement[bool]:
    """The rows of `table` (any with an api_key_id) of a client key: its own, the keyless
    ones for None, everyone's for ANY_KEY."""
    if isinstance(client_key_id, _AnyKey):
        return true()
    if client_key_id is None:
        return table.c.api_key_id.is_(None)
    return table.c.api_key_id == client_key_id
