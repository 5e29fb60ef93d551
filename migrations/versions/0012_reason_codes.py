"""reason codes: jobs.pending_reason_codes, why a queued job waits as data beside the words

The scheduler writes each queued job's reasons twice: as words (`pending_reasons`, as before) and
as a list of {"code", "params"} objects (kqi/scheduler/model.py lists the codes). Rows from before
start empty; the scheduler's next tick rewrites a queued job whose codes do not match its words.

Plain ADD and DROP COLUMN on both databases (SQLite has both since 3.35): a batch rebuild of the
jobs table would need 0011's care with AUTOINCREMENT and foreign keys for nothing.

Revision ID: 0012_reason_codes
Revises: 0011_sqlite_ids
"""
import sqlalchemy as sa
from alembic import op

revision = '0012_reason_codes'
down_revision = '0011_sqlite_ids'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('jobs', sa.Column('pending_reason_codes', sa.JSON(), nullable=False, server_default='[]'))


def downgrade():
    op.drop_column('jobs', 'pending_reason_codes')
