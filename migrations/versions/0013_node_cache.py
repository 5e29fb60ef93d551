"""node cache: read-only inputs kept on each node by content (node_cache_entries), a node's shared
storage folder and its own cache budget

Revision ID: 0013_node_cache
Revises: 0012_reason_codes
"""
import sqlalchemy as sa
from alembic import op

revision = '0013_node_cache'
down_revision = '0012_reason_codes'
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMN: a batch would rebuild nodes on SQLite, which the jobs' foreign keys refuse.
    op.add_column('nodes', sa.Column('shared_storage', sa.String(length=255), nullable=False, server_default=''))
    op.add_column('nodes', sa.Column('cache_gb', sa.Float(), nullable=True))
    op.create_table('node_cache_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('last_used_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('node_id', 'content_hash')
    )


def downgrade():
    op.drop_table('node_cache_entries')
    op.drop_column('nodes', 'cache_gb')
    op.drop_column('nodes', 'shared_storage')
