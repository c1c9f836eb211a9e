"""The rulebook: exam schedule (versioned), maintenance windows, cases, their evidence and actions,
notifications, and the rulebook's own state.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("imported_at", sa.Float, nullable=False),
        sa.Column("imported_by", sa.String(100), nullable=False),
        sa.Column("source", sa.String(300), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("months", sa.JSON, nullable=False),
        sa.Column("sessions", sa.Integer, nullable=False),
    )
    op.create_table(
        "exam_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("schedule_versions.id"), nullable=False),
        sa.Column("retired_in", sa.Integer, sa.ForeignKey("schedule_versions.id")),
        sa.Column("session_id", sa.String(100), nullable=False),
        sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), nullable=False),
        sa.Column("room", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("end", sa.Float, nullable=False),
    )
    op.create_index("ix_exam_sessions_retired", "exam_sessions", ["retired_in"])
    op.create_index("ix_exam_sessions_venue_start", "exam_sessions", ["venue_id", "start"])
    op.create_table(
        "maintenance_windows",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("end", sa.Float, nullable=False),
        sa.Column("rules", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("declared_by", sa.String(100), nullable=False),
        sa.Column("declared_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("decided_by", sa.String(100)),
        sa.Column("decided_at", sa.Float),
        sa.Column("decision_reason", sa.Text),
    )
    op.create_index("ix_maintenance_venue", "maintenance_windows", ["venue_id", "start"])
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("venue_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.Integer, nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("clause", sa.JSON, nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("room", sa.String(100), nullable=False, server_default=""),
        sa.Column("session_id", sa.String(100), nullable=False, server_default=""),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("status", sa.String(14), nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("closed_at", sa.Float),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_cases_rule", "cases", ["rule_id"])
    op.create_index("ix_cases_venue_state", "cases", ["venue_id", "state"])
    op.create_table(
        "case_evidence",
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), primary_key=True),
        sa.Column("record_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("vault_index", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger),
    )
    op.create_table(
        "case_actions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("role", sa.String(12), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("vault_index", sa.BigInteger),
    )
    op.create_index("ix_case_actions_case", "case_actions", ["case_id"])
    op.create_index("ix_case_actions_unvaulted", "case_actions", ["vault_index"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("case_version", sa.Integer, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("next_at", sa.Float),
        sa.Column("failed_at", sa.Float),
        sa.UniqueConstraint("case_id", "case_version", "channel", name="uq_notifications_once"),
    )
    op.create_index("ix_notifications_unsent", "notifications", ["sent_at"])
    op.create_table(
        "rule_state",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    for name in ("rule_state", "notifications", "case_actions", "case_evidence", "cases", "maintenance_windows",
                 "exam_sessions", "schedule_versions"):
        op.drop_table(name)
