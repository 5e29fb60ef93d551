"""services: notebook and TensorBoard containers (published port, token, lifetime, idle), kqi's own halt reason

Revision ID: 0008_services
Revises: 0007_preprocessing
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

revision = '0008_services'
down_revision = '0007_preprocessing'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'service_runs',
        sa.Column('job_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('container_port', sa.Integer(), nullable=False),
        sa.Column('host_port', sa.Integer(), nullable=True),
        sa.Column('token_sealed', sa.Text(), nullable=False, server_default=''),
        sa.Column('lifetime_s', sa.Integer(), nullable=True),
        sa.Column('previous_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='SET NULL'), nullable=True),
        sa.Column('run_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='SET NULL'), nullable=True),
        sa.Column('rx_bytes', sa.BigInteger(), nullable=True),
        sa.Column('active_at', sa.DateTime(), nullable=True),
        sa.Column('checked_at', sa.DateTime(), nullable=True),
    )
    op.create_index('ix_service_runs_run_id', 'service_runs', ['run_id'])
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('halt_reason', sa.String(200), nullable=False, server_default=''))


def downgrade():
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('halt_reason')
    op.drop_index('ix_service_runs_run_id', table_name='service_runs')
    op.drop_table('service_runs')
