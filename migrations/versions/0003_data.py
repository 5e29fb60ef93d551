"""data, datasets, git servers and tokens, registries and credentials, job sources, parents, attachments

Revision ID: 0003_data
Revises: 0001_initial
"""
from alembic import op
import sqlalchemy as sa

revision = '0003_data'
down_revision = '0001_initial'
branch_labels = None
depends_on = None


def _created():
    return sa.Column('created_at', sa.DateTime(), nullable=False, server_default=sa.func.now())


def upgrade():
    op.create_table(
        'data',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('tenant_id', sa.Integer(), sa.ForeignKey('tenants.id'), nullable=False),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('name', sa.String(256), nullable=False),
        sa.Column('memo', sa.Text(), nullable=False, server_default=''),
        sa.Column('tags', sa.Text(), nullable=False, server_default=''),
        _created(),
    )
    op.create_index('ix_data_tenant', 'data', ['tenant_id', 'id'])
    op.create_table(
        'data_files',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('data_id', sa.Integer(), sa.ForeignKey('data.id', ondelete='CASCADE'), nullable=False),
        sa.Column('name', sa.String(255), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(64), nullable=False),
        _created(),
        sa.UniqueConstraint('data_id', 'name'),
    )
    op.create_index('ix_data_files_data_id', 'data_files', ['data_id'])
    op.create_index('ix_data_files_sha256', 'data_files', ['sha256'])
    op.create_table(
        'datasets',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('tenant_id', sa.Integer(), sa.ForeignKey('tenants.id'), nullable=False),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('name', sa.String(256), nullable=False),
        sa.Column('memo', sa.Text(), nullable=False, server_default=''),
        sa.Column('flat', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('locked', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('content_hash', sa.String(64), nullable=False, server_default=''),
        _created(),
    )
    op.create_index('ix_datasets_tenant', 'datasets', ['tenant_id', 'id'])
    op.create_table(
        'dataset_entries',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('dataset_id', sa.Integer(), sa.ForeignKey('datasets.id', ondelete='CASCADE'), nullable=False),
        sa.Column('area', sa.String(16), nullable=False),
        sa.Column('data_id', sa.Integer(), sa.ForeignKey('data.id'), nullable=False),
        sa.UniqueConstraint('dataset_id', 'area', 'data_id'),
    )
    op.create_index('ix_dataset_entries_dataset_id', 'dataset_entries', ['dataset_id'])
    op.create_index('ix_dataset_entries_data_id', 'dataset_entries', ['data_id'])
    op.create_table(
        'git_servers',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('name', sa.String(64), nullable=False, unique=True),
        sa.Column('url', sa.String(512), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        _created(),
    )
    op.create_table(
        'git_tokens',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'), nullable=False),
        sa.Column('git_server_id', sa.Integer(), sa.ForeignKey('git_servers.id', ondelete='CASCADE'), nullable=False),
        sa.Column('username', sa.String(128), nullable=False, server_default=''),
        sa.Column('sealed_token', sa.Text(), nullable=False),
        _created(),
        sa.UniqueConstraint('user_id', 'git_server_id'),
    )
    op.create_table(
        'registries',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('name', sa.String(64), nullable=False, unique=True),
        sa.Column('host', sa.String(255), nullable=False, unique=True),
        _created(),
    )
    op.create_table(
        'registry_credentials',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'), nullable=False),
        sa.Column('registry_id', sa.Integer(), sa.ForeignKey('registries.id', ondelete='CASCADE'), nullable=False),
        sa.Column('username', sa.String(128), nullable=False),
        sa.Column('sealed_password', sa.Text(), nullable=False),
        _created(),
        sa.UniqueConstraint('user_id', 'registry_id'),
    )
    op.create_table(
        'job_sources',
        sa.Column('job_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('dataset_id', sa.Integer(), sa.ForeignKey('datasets.id'), nullable=True),
        sa.Column('dataset_hash', sa.String(64), nullable=False, server_default=''),
        sa.Column('git_repository', sa.String(1024), nullable=False, server_default=''),
        sa.Column('git_branch', sa.String(255), nullable=False, server_default=''),
        sa.Column('git_commit', sa.String(40), nullable=False, server_default=''),
        sa.Column('pull', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('provenance', sa.JSON(), nullable=False),
    )
    op.create_index('ix_job_sources_dataset_id', 'job_sources', ['dataset_id'])
    op.create_table(
        'job_parents',
        sa.Column('job_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('parent_id', sa.Integer(), sa.ForeignKey('jobs.id'), primary_key=True),
        sa.Column('position', sa.Integer(), nullable=False, server_default='0'),
    )
    op.create_index('ix_job_parents_parent_id', 'job_parents', ['parent_id'])
    op.create_table(
        'job_attachments',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('job_id', sa.Integer(), sa.ForeignKey('jobs.id', ondelete='CASCADE'), nullable=False),
        sa.Column('name', sa.String(255), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.String(64), nullable=False),
        _created(),
        sa.UniqueConstraint('job_id', 'name'),
    )
    op.create_index('ix_job_attachments_job_id', 'job_attachments', ['job_id'])
    op.create_index('ix_job_attachments_sha256', 'job_attachments', ['sha256'])


def downgrade():
    for table in ('job_attachments', 'job_parents', 'job_sources', 'registry_credentials', 'registries',
                  'git_tokens', 'git_servers', 'dataset_entries', 'datasets', 'data_files', 'data'):
        op.drop_table(table)
