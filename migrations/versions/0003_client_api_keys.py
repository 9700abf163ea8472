"""Client API keys, their daily token usage, and the key each message belongs to.

Existing rows keep api_key_id NULL: they stay the conversations of the keyless mode.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 20:20:33.443563

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('rate_limit', sa.String(length=100), nullable=True),
    sa.Column('daily_tokens', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    op.create_table('api_key_usage',
    sa.Column('api_key_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('total_tokens', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_api_key_usage_api_key_id_api_keys')),
    sa.PrimaryKeyConstraint('api_key_id', 'day', name=op.f('pk_api_key_usage'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('api_key_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_messages_api_key_id_user_id', ['api_key_id', 'user_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_messages_api_key_id_api_keys'), 'api_keys', ['api_key_id'], ['id'])



def downgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_messages_api_key_id_api_keys'), type_='foreignkey')
        batch_op.drop_index('ix_messages_api_key_id_user_id')
        batch_op.drop_column('api_key_id')

    op.drop_table('api_key_usage')
    op.drop_table('api_keys')
