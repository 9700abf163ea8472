"""Upstream attempts: every call the router makes to a deployment for an exchange.

One row per attempt, in order (`attempt` 1, 2, ...), the answering one included: which
deployment and model, how it ended (`outcome`), the upstream's status, how long it took,
the error. Rows name their exchange by `exchange_id` (indexed), as `responses` do; no
foreign key, since an exchange is several `messages` rows, not one.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 09:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('upstream_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('exchange_id', sa.String(length=36), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('deployment', sa.String(length=255), nullable=False),
    sa.Column('model', sa.String(length=255), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_upstream_attempts'))
    )
    with op.batch_alter_table('upstream_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_upstream_attempts_exchange_id'), ['exchange_id'], unique=False)


def downgrade():
    with op.batch_alter_table('upstream_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_upstream_attempts_exchange_id'))

    op.drop_table('upstream_attempts')
