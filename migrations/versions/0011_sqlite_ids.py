"""sqlite ids: jobs get AUTOINCREMENT on SQLite, so a deleted job's id is never given to another job

Without AUTOINCREMENT SQLite picks max(rowid)+1: deleting the newest job handed its id to the next
one, whose end then clashed with the first one's usage record (usage_records.job_id is unique and
outlives the job), and notices, job folders and container labels named one id for two jobs.
Only jobs: other deletable rows (data, datasets, definitions...) are named after deletion by
nothing but the audit log's request paths, which record the deletion itself.

SQLite cannot add AUTOINCREMENT in place: the table is rebuilt (alembic batch mode, which reflects
it: every column, index and foreign key as it is now). DROP TABLE with foreign keys on would
cascade into job_parts, gpu_allocations, job_events... so the rebuild runs with them off, which
SQLite only honours outside a transaction: in an autocommit block, in our own transaction, checked
with PRAGMA foreign_key_check before commit.

PostgreSQL: nothing to do, a sequence never hands out a value twice.

Revision ID: 0011_sqlite_ids
Revises: 0010_load
"""
import sqlalchemy as sa
from alembic import op

revision = '0011_sqlite_ids'
down_revision = '0010_load'
branch_labels = None
depends_on = None

# Every id a job has had: the rows that outlive a job (no foreign key) keep naming it.
MAX_JOB_ID_EVER = sa.text(
    "SELECT max(id) FROM (SELECT max(id) AS id FROM jobs UNION ALL SELECT max(job_id) FROM usage_records "
    "UNION ALL SELECT max(job_id) FROM notifications)"
)


def upgrade():
    if op.get_bind().dialect.name != 'sqlite':
        return
    with op.get_context().autocommit_block():  # commits the revisions before; the PRAGMA needs no transaction
        _with_foreign_keys_off(_rebuild_jobs)


def downgrade():
    # Nothing to undo: the schema of 0010 works as it is with AUTOINCREMENT, and taking it away
    # would only bring the reuse back.
    pass


def _rebuild_jobs(conn):
    used = max(conn.scalar(MAX_JOB_ID_EVER) or 0, _sequence(conn))  # read before the old table goes
    with op.batch_alter_table('jobs', recreate='always', table_kwargs={'sqlite_autoincrement': True}):
        pass
    conn.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'jobs'"))
    conn.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', :seq)"), {'seq': used})


def _sequence(conn):
    """The jobs' AUTOINCREMENT counter when this runs again (after the no-op downgrade), else 0."""
    if not conn.scalar(sa.text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'")):
        return 0
    return conn.scalar(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'")) or 0


def _with_foreign_keys_off(work):
    conn = op.get_bind()
    was_on = conn.exec_driver_sql('PRAGMA foreign_keys').scalar()
    conn.exec_driver_sql('PRAGMA foreign_keys=OFF')
    try:
        if conn.exec_driver_sql('PRAGMA foreign_keys').scalar():  # inside a transaction: the PRAGMA did nothing
            raise RuntimeError('0011_sqlite_ids: could not turn foreign keys off; rebuilding jobs would '
                               'cascade-delete their parts, events and sources')
        conn.exec_driver_sql('BEGIN')
        try:
            before = _violations(conn)
            work(conn)
            new = _violations(conn) - before
            if new:
                raise RuntimeError(f'0011_sqlite_ids: the rebuild broke foreign keys {sorted(new)[:5]}')
        except BaseException:
            conn.exec_driver_sql('ROLLBACK')
            raise
        conn.exec_driver_sql('COMMIT')
    finally:
        conn.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if was_on else 'OFF'}")


def _violations(conn):
    """Rows whose parent is missing, as (table, rowid, parent): only the ones the rebuild made count,
    so an old inconsistency elsewhere does not block the upgrade."""
    return {tuple(row[:3]) for row in conn.exec_driver_sql('PRAGMA foreign_key_check')}
