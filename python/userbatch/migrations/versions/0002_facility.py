"""The facility: users, groups, memberships, quotas, audit, tokens, runs, charges, workflows.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "ub_users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "ub_groups",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "ub_memberships",
        sa.Column("user", sa.String(64), sa.ForeignKey("ub_users.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("group", sa.String(64), sa.ForeignKey("ub_groups.name", ondelete="CASCADE"), primary_key=True),
    )
    op.create_table(
        "ub_quotas",
        sa.Column("subject_kind", sa.String(8), primary_key=True),
        sa.Column("subject", sa.String(64), primary_key=True),
        sa.Column("core_hours", sa.Float(), nullable=False),
        sa.Column("max_cores", sa.Integer(), nullable=False),
        sa.Column("storage_gb", sa.Float(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "ub_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", TZ, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("before", sa.Text(), nullable=False),
        sa.Column("after", sa.Text(), nullable=False),
    )
    op.create_table(
        "ub_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("ub_users.name", ondelete="CASCADE"), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("last_used_at", TZ, nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "ub_runs",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("user", sa.String(64), nullable=False, index=True),
        sa.Column("group", sa.String(64), nullable=True, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("runner", sa.String(16), nullable=False),
        sa.Column("cores", sa.Integer(), nullable=False),
        sa.Column("max_hours", sa.Float(), nullable=False),
        sa.Column("reserved_core_hours", sa.Float(), nullable=False),
        sa.Column("charged_core_hours", sa.Float(), nullable=True),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("submitted_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(128), nullable=True),
        sa.Column("app_id", sa.String(128), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("run_dir", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("rerun_of", sa.String(16), nullable=True),
        sa.Column("workflow_id", sa.String(16), nullable=True),
    )
    op.create_table(
        "ub_charges",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(16), nullable=False, index=True),
        sa.Column("user", sa.String(64), nullable=False, index=True),
        sa.Column("group", sa.String(64), nullable=True, index=True),
        sa.Column("period", sa.String(16), nullable=False, index=True),
        sa.Column("core_hours", sa.Float(), nullable=False),
        sa.Column("cpu_hours", sa.Float(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("at", TZ, nullable=False),
    )
    op.create_table(
        "ub_workflows",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("group", sa.String(64), nullable=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("schedule", sa.String(64), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", TZ, nullable=True),
        sa.Column("last_run_id", sa.String(16), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_workflow_owner_name"),
    )


def downgrade():
    for name in ("ub_workflows", "ub_charges", "ub_runs", "ub_tokens", "ub_audit", "ub_quotas", "ub_memberships",
                 "ub_users", "ub_groups"):
        op.drop_table(name)
