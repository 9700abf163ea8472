"""Exchange reservations: what each exchange reserved of its key's budget when it began.

The first row of an exchange records the worst case its request reserved (NULL when it
reserved nothing), so that when its process dies before the reply is recorded, the
sweeper gives those tokens back along with charging the prompt. Existing rows keep NULL.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 07:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reserved_tokens', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('reserved_tokens')
