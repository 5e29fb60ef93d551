"""merge the node, data and administration branches

Revision ID: 0005_merge
Revises: 0002_nodes, 0003_data, 0004_admin
"""

revision = '0005_merge'
down_revision = ('0002_nodes', '0003_data', '0004_admin')
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
