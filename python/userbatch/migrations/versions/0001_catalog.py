"""The table catalog (the foundation's only table).

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "ub_tables",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("ra_column", sa.String(128), nullable=True),
        sa.Column("dec_column", sa.String(128), nullable=True),
        sa.Column("coord_unit", sa.String(16), nullable=False),
        sa.Column("partition_order", sa.Integer(), nullable=True),
        sa.Column("pixel_threshold", sa.Integer(), nullable=True),
        sa.Column("highest_order", sa.Integer(), nullable=True),
        sa.Column("margin_radius_arcsec", sa.Float(), nullable=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("group", sa.String(128), nullable=True),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("properties", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table("ub_tables")
