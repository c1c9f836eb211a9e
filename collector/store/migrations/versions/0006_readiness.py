"""Readiness and seal: the seals that make later changes after-seal evidence; readiness rounds,
each agent's report, the venue reports, and the readiness consumer's cursor.

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
    op.create_table(
        "readiness_rounds",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), nullable=False),
        sa.Column("exam_day", sa.String(10), nullable=False),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("sent_at", sa.Float),
        sa.Column("deadline", sa.Float),
        sa.Column("agents", sa.JSON),
    )
    op.create_index("ix_readiness_rounds_venue_day", "readiness_rounds", ["venue_id", "exam_day"])
    op.create_index("ix_readiness_rounds_state", "readiness_rounds", ["state"])
    op.create_table(
        "agent_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("round_id", sa.Integer, sa.ForeignKey("readiness_rounds.id")),
        sa.Column("venue_id", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("exam_day", sa.String(10), nullable=False),
        sa.Column("record_id", sa.BigInteger, nullable=False),
        sa.Column("vault_index", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("result", sa.String(10), nullable=False),
        sa.Column("items", sa.JSON, nullable=False),
        sa.Column("baseline", sa.JSON, nullable=False),
        sa.Column("config_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("late", sa.Boolean, nullable=False),
    )
    op.create_index("ix_agent_reports_round", "agent_reports", ["round_id"])
    op.create_table(
        "venue_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("round_id", sa.Integer, sa.ForeignKey("readiness_rounds.id"), nullable=False),
        sa.Column("venue_id", sa.String(64), nullable=False),
        sa.Column("exam_day", sa.String(10), nullable=False),
        sa.Column("completed_at", sa.Float, nullable=False),
        sa.Column("result", sa.String(10), nullable=False),
        sa.Column("items", sa.JSON, nullable=False),
        sa.Column("agents", sa.JSON, nullable=False),
        sa.Column("fixed", sa.JSON, nullable=False),
        sa.Column("vault_index", sa.BigInteger),
        sa.UniqueConstraint("round_id", name="uq_venue_reports_round"),
    )
    op.create_index("ix_venue_reports_venue_day", "venue_reports", ["venue_id", "exam_day"])
    op.create_index("ix_venue_reports_unvaulted", "venue_reports", ["vault_index"])
    op.create_table(
        "readiness_state",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for table in ("readiness_state", "venue_reports", "agent_reports", "readiness_rounds", "seals"):
        op.drop_table(table)
