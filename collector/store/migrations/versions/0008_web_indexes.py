"""Overview indexes and the record of each ``vault verify`` run.

The overview reads today's and tomorrow's sessions across all venues by start time and every
venue's agents; without these indexes PostgreSQL scans both tables on each build. The admin page
shows the vault's last verification, which no table kept before.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_exam_sessions_start", "exam_sessions", ["start"])
    op.create_index("ix_agents_venue", "agents", ["venue_id"])
    op.create_table(
        "vault_verifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("records", sa.BigInteger, nullable=False),
        sa.Column("sealed", sa.BigInteger, nullable=False),
        sa.Column("checkpoints", sa.Integer, nullable=False),
        sa.Column("signatures_checked", sa.Boolean, nullable=False),
        sa.Column("problem_count", sa.Integer, nullable=False),
        sa.Column("problem", sa.Text, nullable=False),
    )
    op.create_index("ix_vault_verifications_finished", "vault_verifications", ["finished_at"])


def downgrade() -> None:
    op.drop_table("vault_verifications")
    op.drop_index("ix_agents_venue", "agents")
    op.drop_index("ix_exam_sessions_start", "exam_sessions")
