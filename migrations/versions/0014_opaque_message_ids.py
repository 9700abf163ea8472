"""Opaque public ids for message rows: `messages.public_id`, 32 random hex digits, unique.

A row's items were named after its id (`msg_<id>`, `fc_<id>_<n>`, `fco_<id>`), and so were
the cursors of `GET /conversations/<user_id>` and the `id` of each row it lists. Row ids
come from one counter that every client key's writes advance, so a key that added an item,
waited and added another learnt how many rows everyone else wrote in between. Items, rows
and cursors are now named by `public_id`, random and kept for the row's life (a column,
not derived from anything). Existing rows are given one here, so the ids clients were
given before this migration stop resolving: they are replaced once, by ids that stay.

The row id still orders rows and pages, internally.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

# 128 random bits as 32 hex digits, drawn by the database for every existing row (PostgreSQL
# 13 and later have gen_random_uuid built in: 122 random bits).
_RANDOM_HEX = {
    'sqlite': "lower(hex(randomblob(16)))",
    'postgresql': "replace(gen_random_uuid()::text, '-', '')",
}


def upgrade():
    bind = op.get_bind()
    with op.batch_alter_table('messages', table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.add_column(sa.Column('public_id', sa.String(length=32), nullable=True))
    op.execute(f"UPDATE messages SET public_id = {_RANDOM_HEX[bind.dialect.name]}")
    with op.batch_alter_table('messages', table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.alter_column('public_id', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_index('ix_messages_public_id', ['public_id'], unique=True)


def downgrade():
    with op.batch_alter_table('messages', table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.drop_index('ix_messages_public_id')
        batch_op.drop_column('public_id')
