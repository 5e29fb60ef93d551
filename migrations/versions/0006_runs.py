"""run history: job status timeline, tags, favorites, inference value, list indexes

Revision ID: 0006_runs
Revises: 0005_merge
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_runs'
down_revision = '0005_merge'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'job_events',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('job_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='CASCADE'), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False, server_default=''),
    )
    op.create_index('ix_job_events_job', 'job_events', ['job_id', 'id'])
    op.create_table(
        'job_tags',
        sa.Column('job_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('tag', sa.String(64), primary_key=True),
        sa.Column('tenant_id', sa.Integer(), sa.ForeignKey('tenants.id'), nullable=False),
    )
    op.create_index('ix_job_tags_tenant_tag', 'job_tags', ['tenant_id', 'tag', 'job_id'])
    op.create_table(
        'job_favorites',
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('job_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='CASCADE'), primary_key=True),
    )
    op.create_index('ix_job_favorites_job_id', 'job_favorites', ['job_id'])
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('value', sa.Float(), nullable=True))
    op.create_index('ix_jobs_tenant_kind', 'jobs', ['tenant_id', 'kind', 'id'])
    op.create_index('ix_jobs_tenant_user', 'jobs', ['tenant_id', 'user_id', 'id'])
    # The timeline of jobs that ended before it was kept: what their own times say.
    op.execute("INSERT INTO job_events (job_id, at, status, reason) "
               "SELECT id, created_at, 'Queued', 'submitted' FROM jobs")
    op.execute("INSERT INTO job_events (job_id, at, status, reason) "
               "SELECT id, started_at, 'Running', '' FROM jobs WHERE started_at IS NOT NULL")
    op.execute("INSERT INTO job_events (job_id, at, status, reason) "
               "SELECT id, completed_at, status, COALESCE(reason, '') FROM jobs WHERE completed_at IS NOT NULL")


def downgrade():
    op.drop_index('ix_jobs_tenant_user', table_name='jobs')
    op.drop_index('ix_jobs_tenant_kind', table_name='jobs')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('value')
    op.drop_table('job_favorites')
    op.drop_table('job_tags')
    op.drop_table('job_events')
