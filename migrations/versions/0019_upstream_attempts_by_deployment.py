"""Upstream attempts by deployment and time, for the console's upstreams page.

The page reads, per deployment, its attempts of the last hour (latency percentiles, error
rate) and its last few errors: a range on this index each, where the table had only its
index by exchange and every read was a scan of all the attempts ever kept.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 10:40:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('upstream_attempts') as batch_op:
        batch_op.create_index('ix_upstream_attempts_deployment_created_at', ['deployment', 'created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('upstream_attempts') as batch_op:
        batch_op.drop_index('ix_upstream_attempts_deployment_created_at')
