"""preprocessing: definitions, runs (history) and the data they made; a job's single-data source

Revision ID: 0007_preprocessing
Revises: 0006_runs
"""
from alembic import op
import sqlalchemy as sa

revision = '0007_preprocessing'
down_revision = '0006_runs'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'preprocessings',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('tenant_id', sa.Integer(), sa.ForeignKey('tenants.id'), nullable=False),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('name', sa.String(30), nullable=False),
        sa.Column('image', sa.String(512), nullable=False, server_default=''),
        sa.Column('command', sa.Text(), nullable=False, server_default=''),
        sa.Column('git_repository', sa.String(1024), nullable=False, server_default=''),
        sa.Column('git_branch', sa.String(255), nullable=False, server_default=''),
        sa.Column('git_commit', sa.String(40), nullable=False, server_default=''),
        sa.Column('cpu_milli', sa.Integer(), nullable=True),
        sa.Column('memory_mib', sa.Integer(), nullable=True),
        sa.Column('gpu_milli', sa.Integer(), nullable=True),
        sa.Column('partition', sa.String(64), nullable=False, server_default=''),
        sa.Column('memo', sa.Text(), nullable=False, server_default=''),
        sa.Column('created_at', sa.DateTime(), nullable=False, server_default=sa.func.now()),
        sa.Column('last_run_at', sa.DateTime(), nullable=True),
        sa.UniqueConstraint('tenant_id', 'name'),
    )
    op.create_index('ix_preprocessings_tenant', 'preprocessings', ['tenant_id', 'id'])
    op.create_table(
        'preprocessing_runs',
        sa.Column('job_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('tenant_id', sa.Integer(), sa.ForeignKey('tenants.id'), nullable=False),
        sa.Column('preprocessing_id', sa.Integer(), sa.ForeignKey('preprocessings.id'), nullable=False),
        sa.Column('data_id', sa.Integer(), sa.ForeignKey('data.id'), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False, server_default=sa.func.now()),
    )
    op.create_index('ix_preprocessing_runs_tenant_id', 'preprocessing_runs', ['tenant_id'])
    op.create_index('ix_preprocessing_runs_data_id', 'preprocessing_runs', ['data_id'])
    op.create_index('ix_preprocessing_runs_definition_data', 'preprocessing_runs', ['preprocessing_id', 'data_id'])
    op.create_table(
        'preprocessing_outputs',
        sa.Column('data_id', sa.Integer(), sa.ForeignKey('data.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('run_id', sa.Integer(), sa.ForeignKey('preprocessing_runs.job_id', ondelete='CASCADE'),
                  nullable=False),
    )
    op.create_index('ix_preprocessing_outputs_run_id', 'preprocessing_outputs', ['run_id'])
    with op.batch_alter_table('job_sources') as batch:
        batch.add_column(sa.Column('data_id', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_job_sources_data_id', 'data', ['data_id'], ['id'])
        batch.create_index('ix_job_sources_data_id', ['data_id'])


def downgrade():
    with op.batch_alter_table('job_sources') as batch:
        batch.drop_index('ix_job_sources_data_id')
        batch.drop_constraint('fk_job_sources_data_id', type_='foreignkey')
        batch.drop_column('data_id')
    op.drop_table('preprocessing_outputs')
    op.drop_table('preprocessing_runs')
    op.drop_table('preprocessings')
