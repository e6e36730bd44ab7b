"""Web UI sessions: the digest of the browser's session secret, its user, the token it signed in with, its CSRF
token and expiry.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "ub_web_sessions",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("ub_users.name", ondelete="CASCADE"), nullable=False),
        sa.Column("token_id", sa.String(16), sa.ForeignKey("ub_tokens.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table("ub_web_sessions")
