"""The deployment that answered, on the reply's row.

An exchange answered by its first attempt writes no `upstream_attempts` row (the common
case costs one insert less): its reply row names the deployment. Every exchange that
failed over, failed, or was cut keeps all its attempts in `upstream_attempts`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 06:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages') as batch_op:
        batch_op.add_column(sa.Column('deployment', sa.String(length=255), nullable=True))


def downgrade():
    with op.batch_alter_table('messages') as batch_op:
        batch_op.drop_column('deployment')
