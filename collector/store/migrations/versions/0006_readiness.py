"""Readiness and seal: the seals that make later changes after-seal evidence.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), nullable=False),
        sa.Column("exam_day", sa.String(10), nullable=False),
        sa.Column("sealed_at", sa.Float, nullable=False),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("report_id", sa.Integer, nullable=False),
        sa.Column("baseline", sa.JSON, nullable=False),
        sa.Column("changes", sa.JSON, nullable=False),
        sa.Column("replaced_by", sa.Integer),
    )
    op.create_index("ix_seals_venue_until", "seals", ["venue_id", "until"])


def downgrade() -> None:
    op.drop_table("seals")
