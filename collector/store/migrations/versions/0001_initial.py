"""Initial schema: venues, agents, records, dead letters.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "venues",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("enrolled_at", sa.Float, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("online", sa.Boolean, nullable=False),
        sa.Column("boot", sa.String(64)),
        sa.Column("last_seen", sa.Float),
        sa.Column("last_heartbeat", sa.Float),
        sa.Column("heartbeat_interval", sa.Float),
        sa.Column("outbox_depth", sa.Integer),
        sa.Column("clock_offset", sa.Float),
        sa.Column("acked_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "records",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("venue_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger),
        sa.Column("boot", sa.String(64)),
        sa.Column("stream", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("vault_index", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("agent_id", "seq", name="uq_records_agent_seq"),
    )
    op.create_index("ix_records_received", "records", ["received_at"])
    op.create_index("ix_records_venue_at", "records", ["venue_id", "at"])
    op.create_index("ix_records_vault", "records", ["vault_index"])
    op.create_table(
        "dead_letters",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("topic", sa.String(300), nullable=False),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("payload_size", sa.Integer, nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_dead_letters_reason", "dead_letters", ["reason"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("records")
    op.drop_table("agents")
    op.drop_table("venues")
