"""Runs as their owners: delegated, scoped, expiring tokens; run leases; the charge measured outside the run.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade():
    with op.batch_alter_table("ub_tokens") as b:
        b.add_column(sa.Column("expires_at", TZ, nullable=True))
        b.add_column(sa.Column("run_id", sa.String(16), nullable=True))
        b.add_column(sa.Column("scope", sa.String(16), nullable=False, server_default="user"))
    with op.batch_alter_table("ub_runs") as b:
        b.add_column(sa.Column("heartbeat_at", TZ, nullable=True))
        b.add_column(sa.Column("worker_id", sa.String(32), nullable=True))
    with op.batch_alter_table("ub_charges") as b:
        b.add_column(sa.Column("used_core_hours", sa.Float(), nullable=True))


def downgrade():
    with op.batch_alter_table("ub_charges") as b:
        b.drop_column("used_core_hours")
    with op.batch_alter_table("ub_runs") as b:
        b.drop_column("worker_id")
        b.drop_column("heartbeat_at")
    with op.batch_alter_table("ub_tokens") as b:
        b.drop_column("scope")
        b.drop_column("run_id")
        b.drop_column("expires_at")
