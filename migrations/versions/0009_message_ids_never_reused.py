"""Message ids never reused: SQLite's AUTOINCREMENT on `messages`.

A row's id names its Conversations-API items (`msg_<id>`, `fc_<id>_<n>`, `fco_<id>`) and
the conversation pages' cursors. Without AUTOINCREMENT, SQLite gives a new row the id of
a deleted last row, so a deleted item's id came back naming another. The table is rebuilt
on SQLite (batch mode copies its rows and indexes); PostgreSQL's sequence never reuses an
id, so nothing changes there.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 08:05:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def _rebuild_messages(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    with op.batch_alter_table(
        'messages', recreate='always', table_kwargs={'sqlite_autoincrement': autoincrement}
    ):
        pass


def upgrade():
    _rebuild_messages(True)


def downgrade():
    _rebuild_messages(False)
