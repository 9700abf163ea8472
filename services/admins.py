"""Admin credentials for the console: make, list, delete and check them.

A password is kept only as werkzeug's scrypt hash (salted, slow on purpose). Checking a
name that does not exist costs the same hash as a wrong password, so the time of an
answer does not tell which names exist.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from models import Admin

MIN_PASSWORD_LENGTH = 12
# Checked when the name is unknown, so that answer takes as long as a wrong password's.
_NO_SUCH_ADMIN = generate_password_hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class AdminIdentity:
    """The operator a console session belongs to. `session_token` changes with the
    password: a session signed before a password change (or a deletion) is no longer valid."""

    id: int
    name: str
    session_token: str


def check_admin_name(name: str) -> str:
    """The name stripped; ValueError unless it is 1 to 100 characters."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("an admin name is 1 to 100 characters")
    return name


def create_admin(session: Session, name: str, password: str | None = None) -> tuple[dict[str, Any], str]:
    """Add an admin to the session; return its record and its password: the one given
    (at least MIN_PASSWORD_LENGTH characters) or a new random one, shown only now.
    A name taken already fails the unit of work with an IntegrityError."""
    name = check_admin_name(name)
    if password is None:
        password = secrets.token_urlsafe(18)
    elif len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password is at least {MIN_PASSWORD_LENGTH} characters")
    admin = Admin(name=name, password_hash=generate_password_hash(password))
    session.add(admin)
    session.flush()
    return admin.to_dict(), password


def list_admins(session: Session) -> list[dict[str, Any]]:
    """Every admin, oldest first (never a hash)."""
    return [admin.to_dict() for admin in session.scalars(select(Admin).order_by(Admin.id))]


def delete_admin(session: Session, name: str) -> bool:
    """Delete the admin of this name; False when there is none. Its sessions end with it."""
    return bool(session.execute(delete(Admin).where(Admin.name == name)).rowcount)


def _session_token(admin: Admin) -> str:
    # Derived from the stored hash (itself salted): it names the credential, reveals nothing.
    return hashlib.sha256(admin.password_hash.encode("utf-8")).hexdigest()[:32]


def verify_admin(session: Session, name: str, password: str) -> AdminIdentity | None:
    """The admin whose name and password these are, or None."""
    admin = session.scalar(select(Admin).where(Admin.name == name.strip()))
    if admin is None:
        check_password_hash(_NO_SUCH_ADMIN, password)
        return None
    if not check_password_hash(admin.password_hash, password):
        return None
    return AdminIdentity(admin.id, admin.name, _session_token(admin))


def known_name(session: Session, name: str) -> str:
    """`name` if an admin has it, else a placeholder: a failed sign-in's audit row never keeps
    what was typed into the name field (it may be a password, or anyone's junk)."""
    found = session.scalar(select(Admin.name).where(Admin.name == name.strip()))
    return found if found is not None else "(unknown name)"


def find_admin(session: Session, admin_id: int, session_token: str) -> AdminIdentity | None:
    """The admin a signed session names, if it still exists with the same password."""
    admin = session.get(Admin, admin_id)
    if admin is None or not secrets.compare_digest(_session_token(admin), session_token):
        return None
    return AdminIdentity(admin.id, admin.name, session_token)
