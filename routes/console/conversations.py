"""The console's conversations pages: the newest conversations (of every key or of one),
a search by conversation id or its prefix, one conversation as a readable thread, and its
erasure (a confirmation page, then a CSRF-checked POST, audited in the same unit of work).

A conversation is named by its key and its id: `?key=<api key id>&id=<conversation id>`,
`key=` empty for the rows stored while keys were off.
"""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, url_for

from database import unit_of_work
from routes.console.blueprint import console_bp, current_admin
from routes.console.forms import ActionForm
from services.console.audit import record_action
from services.console.conversation import conversation_header, erase, exchange_start, thread_page
from services.console.conversations import key_choices, recent_conversations, search_conversations
from services.console.keys import find_key
from services.ownership import ANY_KEY, KeyScope

MAX_ID_LENGTH = 128  # the user_id column's width


def _key_scope(allow_any: bool) -> KeyScope:
    """`key` of the query: a key's id, empty for the keyless rows, absent or "all" for
    every key where `allow_any`; anything else is a 404."""
    text = request.args.get("key")
    if text is None or text == "all":
        if allow_any:
            return ANY_KEY
        text = ""
    if text == "":
        return None
    if not text.isdigit() or len(text) > 18:
        abort(404)
    return int(text)


def _int_arg(name: str) -> int | None:
    text = request.args.get(name, "")
    return int(text) if text.isdigit() and len(text) <= 18 else None


@console_bp.get("/conversations")
def conversations_page():
    """The newest conversations (`before`: the next page's cursor), or those whose id is `q`
    (with `prefix=1`: whose id starts with `q`; `after`: the next page's cursor)."""
    scope = _key_scope(allow_any=True)
    text = request.args.get("q", "").strip()[:MAX_ID_LENGTH]
    prefix = request.args.get("prefix") == "1"
    with unit_of_work(write=False) as db_session:
        if text:
            listing = search_conversations(db_session, scope, text, prefix, request.args.get("after") or None)
        else:
            listing = recent_conversations(db_session, scope, _int_arg("before"))
        keys = key_choices(db_session)
    cursor_name = "after" if text else "before"
    next_args = None
    if listing.next_cursor is not None:
        kept = {name: request.args[name] for name in ("key", "q", "prefix") if name in request.args}
        next_args = {**kept, cursor_name: listing.next_cursor}
    return render_template(
        "console/conversations.html",
        conversations=listing.conversations,
        keys=keys,
        chosen_key="all" if scope is ANY_KEY else "" if scope is None else str(scope),
        q=text,
        prefix=prefix,
        next_args=next_args,
    )


@console_bp.get("/conversation")
def conversation_page():
    """One conversation as a thread, a page of rows at a time: from its start, `after` or
    `before` a row, from an `exchange`'s first row, or its last page (`end=1`)."""
    key_id, user_id = _key_scope(allow_any=False), request.args.get("id", "")[:MAX_ID_LENGTH]
    after, before = _int_arg("after"), _int_arg("before")
    with unit_of_work(write=False) as db_session:
        header = conversation_header(db_session, key_id, user_id) if user_id else None
        if header is None:
            return _not_found(user_id)
        if request.args.get("exchange"):
            after, before = exchange_start(db_session, key_id, user_id, request.args["exchange"]), None
        elif request.args.get("end") == "1":
            after, before = None, header["last_id"] + 1
        thread = thread_page(db_session, key_id, user_id, after, before, current_app.config["PAGE_MAX_BYTES"])
        key = find_key(db_session, key_id) if key_id is not None else None
    return render_template(
        "console/conversation.html",
        key_id=key_id,
        key=key,
        user_id=user_id,
        header=header,
        thread=thread,
    )


def _not_found(user_id: str):
    message = "No conversation with that id is stored under that key (erased, or never made)."
    return render_template("console/error.html", title="Conversation not found", message=message), 404


@console_bp.get("/conversation/erase")
def erase_conversation_page():
    """The confirmation: what erasing this conversation removes, and the button that does."""
    key_id, user_id = _key_scope(allow_any=False), request.args.get("id", "")[:MAX_ID_LENGTH]
    with unit_of_work(write=False) as db_session:
        header = conversation_header(db_session, key_id, user_id) if user_id else None
    if header is None:
        return _not_found(user_id)
    return render_template(
        "console/erase_conversation.html",
        key_id=key_id,
        user_id=user_id,
        header=header,
        form=ActionForm(formdata=None),
    )


@console_bp.post("/conversation/erase")
def erase_conversation_view():
    """Erase the conversation for good, as the API's DELETE does, once confirmed on the
    confirmation page (a POST without `confirm=yes` is sent there); audited."""
    key_text, user_id = request.form.get("key", ""), request.form.get("id", "")[:MAX_ID_LENGTH]
    if key_text and not key_text.isdigit():
        abort(404)
    key_id = int(key_text) if key_text else None
    if request.form.get("confirm") != "yes":
        return redirect(url_for("console.erase_conversation_page", key=key_text, id=user_id), 303)
    with unit_of_work() as db_session:
        erased = erase(db_session, key_id, user_id) if user_id else 0
        if erased:
            key = find_key(db_session, key_id) if key_id is not None else None
            detail = {"key": key["prefix"] if key else None, "conversation": user_id, "messages": erased}
            record_action(db_session, current_admin().name, "conversation.erase", user_id, detail)
    if not erased:
        return _not_found(user_id)
    flash(f"Erased conversation {user_id}: {erased} messages, and the responses made in it.")
    return redirect(url_for("console.conversations_page", key=key_text), 303)
