"""The request log and its daily rollups (the console's Requests and Overview pages).

`request_log`: one row per ended exchange, with an index per filter of the Requests page
(key, model, route, status, or none), each ordered newest first. `request_rollups`: the
exchanges of each UTC day, model and route counted, with a latency histogram;
`request_key_rollups` the same per UTC day and key.

All are backfilled from `messages`, set-based (one INSERT ... SELECT each), so that an
existing install's console is not empty: routes and latencies were never kept, so they
are NULL (the rollups' histogram counts none); the model is the one asked for where the
rows name it (a failed exchange's), else the one that answered. Exchanges still pending get their row when
they end.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 10:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

LATENCY_COLUMNS = [f'latency_b{index}' for index in range(10)]
FILTERS = ('api_key_id', 'model', 'route', 'status')

BACKFILL_LOG = """
INSERT INTO request_log (exchange_id, api_key_id, user_id, route, model, answered_model, deployment, status,
                         error, prompt_tokens, completion_tokens, cost_micros, latency_ms, created_at)
SELECT exchange_id, MAX(api_key_id), MAX(user_id), NULL,
       COALESCE(MAX(CASE WHEN role <> 'assistant' THEN model END), MAX(CASE WHEN role = 'assistant' THEN model END)),
       MAX(CASE WHEN role = 'assistant' THEN model END),
       MAX(deployment), MAX(status), SUBSTR(MAX(error), 1, 300),
       SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_micros), NULL, MAX(timestamp)
FROM messages
WHERE status <> 'pending'
GROUP BY exchange_id
ORDER BY MAX(timestamp), MIN(id)
"""

BACKFILL_ROLLUPS = """
INSERT INTO {table} ({dimensions}, requests, errors, prompt_tokens, completion_tokens, cost_micros,
                     latency_ms_total, {latency})
SELECT {grouped}, COUNT(*), SUM(CASE WHEN status IN ('failed', 'abandoned') THEN 1 ELSE 0 END),
       COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_micros), 0),
       0, {zeros}
FROM request_log
GROUP BY {grouped}
"""


def _counters():
    return [
        sa.Column('requests', sa.Integer(), nullable=False),
        sa.Column('errors', sa.Integer(), nullable=False),
        sa.Column('prompt_tokens', sa.BigInteger(), nullable=False),
        sa.Column('completion_tokens', sa.BigInteger(), nullable=False),
        sa.Column('cost_micros', sa.BigInteger(), nullable=False),
        sa.Column('latency_ms_total', sa.BigInteger(), nullable=False),
        *[sa.Column(name, sa.Integer(), nullable=False) for name in LATENCY_COLUMNS],
    ]


def upgrade():
    op.create_table(
        'request_log',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('exchange_id', sa.String(length=36), nullable=False),
        sa.Column('api_key_id', sa.Integer(), nullable=True),
        sa.Column('user_id', sa.String(length=128), nullable=False),
        sa.Column('route', sa.String(length=128), nullable=True),
        sa.Column('model', sa.String(length=255), nullable=True),
        sa.Column('answered_model', sa.String(length=255), nullable=True),
        sa.Column('deployment', sa.String(length=255), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('error', sa.String(length=300), nullable=True),
        sa.Column('prompt_tokens', sa.Integer(), nullable=True),
        sa.Column('completion_tokens', sa.Integer(), nullable=True),
        sa.Column('cost_micros', sa.BigInteger(), nullable=True),
        sa.Column('latency_ms', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_request_log')),
        sa.UniqueConstraint('exchange_id', name=op.f('uq_request_log_exchange_id')),
        sqlite_autoincrement=True,
    )
    op.create_table(
        'request_rollups',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('model', sa.String(length=255), nullable=False),
        sa.Column('route', sa.String(length=128), nullable=False),
        *_counters(),
        sa.PrimaryKeyConstraint('day', 'model', 'route', name=op.f('pk_request_rollups')),
    )
    op.create_table(
        'request_key_rollups',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('api_key_id', sa.Integer(), nullable=False),
        *_counters(),
        sa.PrimaryKeyConstraint('day', 'api_key_id', name=op.f('pk_request_key_rollups')),
    )
    _backfill()
    # Indexes after the backfill: built once from sorted data rather than kept row by row.
    op.create_index('ix_request_log_created_at_id', 'request_log', ['created_at', 'id'], unique=False)
    for column in FILTERS:
        op.create_index(f'ix_request_log_{column}_created_at_id', 'request_log', [column, 'created_at', 'id'])


def _backfill():
    bind = op.get_bind()
    bind.execute(sa.text(BACKFILL_LOG))
    if bind.dialect.name == 'postgresql':
        day = "CAST(created_at AT TIME ZONE 'UTC' AS DATE)"
    else:
        day = 'DATE(created_at)'
    latency = ', '.join(LATENCY_COLUMNS)
    zeros = ', '.join('0' for _ in LATENCY_COLUMNS)
    grains = {
        'request_rollups': ('day, model, route', f"{day}, COALESCE(model, ''), COALESCE(route, '')"),
        'request_key_rollups': ('day, api_key_id', f'{day}, COALESCE(api_key_id, 0)'),
    }
    for table, (dimensions, grouped) in grains.items():
        statement = BACKFILL_ROLLUPS.format(
            table=table, dimensions=dimensions, grouped=grouped, latency=latency, zeros=zeros
        )
        bind.execute(sa.text(statement))


def downgrade():
    for column in FILTERS:
        op.drop_index(f'ix_request_log_{column}_created_at_id', table_name='request_log')
    op.drop_index('ix_request_log_created_at_id', table_name='request_log')
    op.drop_table('request_key_rollups')
    op.drop_table('request_rollups')
    op.drop_table('request_log')
