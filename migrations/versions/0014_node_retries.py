"""node retries: a job's consecutive infrastructure failures (starting, stopping, collecting) and
when the scheduler tries again

A node that fails an operation (unreachable, an engine's server error) is tried again after a
backoff, up to a bounded number of tries; then the job ends as Error. Both survive a restart of the
server. Plain ADD and DROP COLUMN, as 0012.

Revision ID: 0014_node_retries
Revises: 0013_node_cache
"""
import sqlalchemy as sa
from alembic import op

revision = '0014_node_retries'
down_revision = '0013_node_cache'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('jobs', sa.Column('failed_tries', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('jobs', sa.Column('retry_at', sa.DateTime(), nullable=True))


def downgrade():
    op.drop_column('jobs', 'retry_at')
    op.drop_column('jobs', 'failed_tries')
