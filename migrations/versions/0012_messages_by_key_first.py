"""Messages looked up by key first: an index on (api_key_id, user_id, status, id).

Every request reads a conversation within its client key (services/ownership.py). With
an index that began with `user_id`, the databases chose it for some of those reads (an
item, a conversation's usage, a keyless history) and checked the key row by row: asking
for a conversation id that another key uses cost as much as that conversation's size,
which told the asker that it existed, and roughly how big it was. This index leads with
the key, so another key's rows are never visited: such a request costs what an unknown
conversation costs. It also holds the status and id that history and item pages filter
and order by.

It replaces `ix_messages_user_id_status_id`, which served the same reads but for the
key. `ix_messages_api_key_id_user_id` stays (a conversation's rows by id, within its
key: SQLite's index holds the row id), and so does `ix_messages_user_id`, through which
the operator's reads across keys find a conversation.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 09:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(
        'ix_messages_api_key_id_user_id_status_id', 'messages', ['api_key_id', 'user_id', 'status', 'id'], unique=False
    )
    op.drop_index('ix_messages_user_id_status_id', table_name='messages')


def downgrade():
    op.create_index('ix_messages_user_id_status_id', 'messages', ['user_id', 'status', 'id'], unique=False)
    op.drop_index('ix_messages_api_key_id_user_id_status_id', table_name='messages')
