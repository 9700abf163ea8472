"""Abandoned exchanges: a heartbeat column for live streams, an index of pending rows.

The sweeper (services/sweeper.py) closes as `abandoned` the exchanges still `pending`
long after any upstream call could have ended: their process died. `heartbeat_at` is
touched by the pipeline while a long stream is relayed, so a live stream is never taken
for a dead one. The partial index holds only pending rows, so the sweeper's periodic
query stays cheap however large the table grows. Existing rows keep NULL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            'ix_messages_pending_timestamp',
            ['timestamp'],
            unique=False,
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )


def downgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_pending_timestamp')
        batch_op.drop_column('heartbeat_at')
