"""Store each chat message whole: every field beyond role and content.

`message_fields` holds what OpenAI's chat API defines on a message besides its role and
content (tool_calls, tool_call_id, name, refusal, ...), so that a conversation is replayed
exactly as it was sent: an assistant message's tool calls and the tool messages
answering them stay valid history. Existing rows keep NULL (they had none of these).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 01:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('message_fields', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('message_fields')
