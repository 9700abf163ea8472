"""A key's rows newest first: an index on (api_key_id, id).

The console's conversations page lists a key's conversations by their newest activity: it
walks the key's rows from the newest down (services/console/conversations.py). No index
did that: (api_key_id, user_id, status, id) orders a key's rows by conversation, and the
primary key orders everyone's rows, so a key with few rows had the whole table walked
before a page filled. With this index the walk visits the key's own rows only, newest
first, whatever the table's size. Keyless rows (api_key_id NULL) are found by it too.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 10:20:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_messages_api_key_id_id', 'messages', ['api_key_id', 'id'], unique=False)


def downgrade():
    op.drop_index('ix_messages_api_key_id_id', table_name='messages')
