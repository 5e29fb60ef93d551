"""load: no schema change (the list pages and the scheduler's queue read use the existing indexes)

Revision ID: 0010_load
Revises: 0009_dashboard
"""

revision = '0010_load'
down_revision = '0009_dashboard'
branch_labels = None
depends_on = None


def upgrade():
    pass  # kept in the chain of revisions; nothing to add


def downgrade():
    pass
