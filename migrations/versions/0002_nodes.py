"""nodes: states, credentials, access, GPUs, node events, the scheduler lease; requeue on node loss

Revision ID: 0002_nodes
Revises: 0001_initial
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_nodes'
down_revision = '0001_initial'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.String(length=20), nullable=False, server_default='Ready'))
        batch_op.add_column(sa.Column('admin_state', sa.String(length=16), nullable=False, server_default='Ready'))
        batch_op.add_column(sa.Column('credentials_sealed', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('ssh_host_key_fingerprint', sa.String(length=128), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('host_key_confirmed', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('tenants', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('allow_notebooks', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('allow_tensorboard', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('gpu_source', sa.String(length=16), nullable=False, server_default='declared'))
        batch_op.add_column(sa.Column('last_seen_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('down_since', sa.DateTime(), nullable=True))

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requeue_on_node_loss', sa.Boolean(), nullable=False, server_default=sa.false()))

    gpus = op.create_table('gpus',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('gpu_index', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=128), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('memory_mib', sa.Integer(), nullable=False),
    sa.Column('busy', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('node_id', 'gpu_index')
    )
    op.create_table('node_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('old_state', sa.String(length=20), nullable=False),
    sa.Column('new_state', sa.String(length=20), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['node_id'], ['nodes.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_node_events_node_at', 'node_events', ['node_id', 'id'], unique=False)
    op.create_table('leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )

    # Nodes registered before this revision keep their declared GPU count as anonymous GPUs.
    conn = op.get_bind()
    rows = conn.execute(sa.text('SELECT id, gpu_count FROM nodes')).all()
    op.bulk_insert(gpus, [{'node_id': node_id, 'gpu_index': i, 'uuid': '', 'model': '', 'memory_mib': 0, 'busy': False}
                          for node_id, count in rows for i in range(count)])


def downgrade():
    op.drop_table('leases')
    op.drop_index('ix_node_events_node_at', table_name='node_events')
    op.drop_table('node_events')
    op.drop_table('gpus')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('requeue_on_node_loss')
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        for column in ('down_since', 'last_seen_at', 'gpu_source', 'allow_tensorboard', 'allow_notebooks', 'tenants',
                       'host_key_confirmed', 'ssh_host_key_fingerprint', 'credentials_sealed', 'admin_state', 'state'):
            batch_op.drop_column(column)
