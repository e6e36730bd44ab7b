"""Runs held by a batch system (Slurm): the batch system's job id.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("ub_runs") as b:
        b.add_column(sa.Column("batch_id", sa.String(64), nullable=True))


def downgrade():
    with op.batch_alter_table("ub_runs") as b:
        b.drop_column("batch_id")
