"""dashboard: cluster_samples (GPU allocation and queue length over time, for the dashboard's chart)

Revision ID: 0009_dashboard
Revises: 0008_services
"""
from alembic import op
import sqlalchemy as sa

revision = '0009_dashboard'
down_revision = '0008_services'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('cluster_samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('gpu_total', sa.Integer(), nullable=False),
    sa.Column('gpu_allocated_milli', sa.Integer(), nullable=False),
    sa.Column('queued', sa.Integer(), nullable=False),
    sa.Column('running', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('cluster_samples', schema=None) as batch_op:
        batch_op.create_index('ix_cluster_samples_at', ['at'], unique=False)


def downgrade():
    with op.batch_alter_table('cluster_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_cluster_samples_at')
    op.drop_table('cluster_samples')
