"""The console's admins and its audit log.

Operators sign in to the console with a name and a password made by `flask admins
create`; only a slow hash of the password is kept. Every action they take is written to
`audit_log` (who, when, what), read newest first.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 08:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'admins',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('password_hash', sa.String(length=255), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_admins')),
        sa.UniqueConstraint('name', name=op.f('uq_admins_name')),
    )
    op.create_table(
        'audit_log',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=100), nullable=False),
        sa.Column('action', sa.String(length=50), nullable=False),
        sa.Column('target', sa.String(length=100), nullable=True),
        sa.Column('detail', sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
    )
    op.create_index('ix_audit_log_at_id', 'audit_log', ['at', 'id'], unique=False)


def downgrade():
    op.drop_index('ix_audit_log_at_id', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_table('admins')
