"""Compaction of stored conversations: summary rows, and the lease that makes one at a time.

A summary is a row of `messages` (role 'compaction', status 'summary') whose
`compacts_through` is the id of the newest row it covers: every completed exchange of its
conversation up to that row. `compaction_leases` holds, per conversation, who is writing its
next summary and until when, so that no two processes or hosts summarise one conversation at
once (a conditional INSERT/UPDATE, services/summaries.py).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 10:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages') as batch_op:
        batch_op.add_column(
            sa.Column('compacts_through', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True)
        )
    op.create_table(
        'compaction_leases',
        sa.Column('conversation', sa.String(length=160), nullable=False),
        sa.Column('holder', sa.String(length=32), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('conversation', name=op.f('pk_compaction_leases')),
    )


def downgrade():
    op.drop_table('compaction_leases')
    with op.batch_alter_table('messages') as batch_op:
        batch_op.drop_column('compacts_through')
