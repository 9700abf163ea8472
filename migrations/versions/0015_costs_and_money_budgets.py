"""Money: each reply's cost, and keys' daily and monthly budgets in USD.

Costs and budgets are integer micro-dollars (services/prices.py says why): the reply row
keeps what it cost when it was recorded (NULL: its model was unpriced), so a later price
change rewrites no history; a key's usage counters add cost and reserved cost beside
tokens, per UTC day and, in a table of their own, per UTC month.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 09:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages') as batch_op:
        batch_op.add_column(sa.Column('cost_micros', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('reserved_micros', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('api_keys') as batch_op:
        batch_op.add_column(sa.Column('daily_usd_micros', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('monthly_usd_micros', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('api_key_usage') as batch_op:
        batch_op.add_column(sa.Column('cost_micros', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('reserved_micros', sa.BigInteger(), server_default='0', nullable=False))
    op.create_table(
        'api_key_monthly_spend',
        sa.Column('api_key_id', sa.Integer(), nullable=False),
        sa.Column('month', sa.Date(), nullable=False),
        sa.Column('cost_micros', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('reserved_micros', sa.BigInteger(), server_default='0', nullable=False),
        sa.ForeignKeyConstraint(
            ['api_key_id'], ['api_keys.id'], name=op.f('fk_api_key_monthly_spend_api_key_id_api_keys')
        ),
        sa.PrimaryKeyConstraint('api_key_id', 'month', name=op.f('pk_api_key_monthly_spend')),
    )


def downgrade():
    op.drop_table('api_key_monthly_spend')
    with op.batch_alter_table('api_key_usage') as batch_op:
        batch_op.drop_column('reserved_micros')
        batch_op.drop_column('cost_micros')
    with op.batch_alter_table('api_keys') as batch_op:
        batch_op.drop_column('monthly_usd_micros')
        batch_op.drop_column('daily_usd_micros')
    with op.batch_alter_table('messages') as batch_op:
        batch_op.drop_column('reserved_micros')
        batch_op.drop_column('cost_micros')
