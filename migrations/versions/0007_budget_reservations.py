"""Budget reservations: what the requests in progress of a key may still spend today.

Each request reserves its worst case (estimated prompt and its max_tokens) before the
upstream is called and gives it back when its real usage is charged, so concurrent
requests cannot together spend past the key's daily budget. Existing rows reserve 0.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 02:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('api_key_usage', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reserved_tokens', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('api_key_usage', schema=None) as batch_op:
        batch_op.drop_column('reserved_tokens')
