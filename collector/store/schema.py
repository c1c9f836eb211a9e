"""Tables of the SQL store (SQLAlchemy Core). Alembic migrations in ``migrations/`` create them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

venues = sa.Table(
    "venues", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("inventory_version", sa.Integer, nullable=False, server_default="0"),
)

devices = sa.Table(
    "devices", metadata,
    sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), primary_key=True),
    sa.Column("mac", sa.String(17), primary_key=True),
    sa.Column("ip", sa.String(45)),  # NULL: DHCP allowed
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("room", sa.String(100), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("vendor", sa.String(20), nullable=False, server_default=""),
    sa.Column("stream", sa.String(300), nullable=False, server_default=""),  # RTSP path to sample
    sa.Column("http_port", sa.Integer, nullable=False, server_default="0"),
    sa.Column("channel", sa.Integer, nullable=False, server_default="0"),  # recorder channel of a camera
)

agents = sa.Table(
    "agents", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), nullable=False),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("enrolled_at", sa.Float, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("online", sa.Boolean, nullable=False, default=False),
    sa.Column("boot", sa.String(64)),
    sa.Column("last_seen", sa.Float),
    sa.Column("last_heartbeat", sa.Float),
    sa.Column("heartbeat_interval", sa.Float),
    sa.Column("outbox_depth", sa.Integer),
    sa.Column("clock_offset", sa.Float),
    sa.Column("acked_seq", sa.BigInteger, nullable=False, default=0),
)

records = sa.Table(
    "records", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(64), nullable=False),
    sa.Column("venue_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger),  # NULL for the collector's own events
    sa.Column("boot", sa.String(64)),
    sa.Column("stream", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("vault_index", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("agent_id", "seq", name="uq_records_agent_seq"),
    sa.Index("ix_records_received", "received_at"),
    sa.Index("ix_records_venue_at", "venue_id", "at"),
    sa.Index("ix_records_vault", "vault_index"),
)

log_lines = sa.Table(
    "log_lines", metadata,
    sa.Column("agent_id", sa.String(64), primary_key=True),
    sa.Column("file_key", sa.String(120), primary_key=True),  # same file across renames, new on replace
    sa.Column("offset", sa.BigInteger, primary_key=True, autoincrement=False),  # byte offset of the line
    sa.Column("venue_id", sa.String(64), nullable=False),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("path", sa.String(1000), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),  # the record that shipped it first
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Index("ix_log_lines_venue_received", "venue_id", "received_at"),
)

dead_letters = sa.Table(
    "dead_letters", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("topic", sa.String(300), nullable=False),
    sa.Column("agent_id", sa.String(64)),
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("payload_size", sa.Integer, nullable=False),
    sa.Column("payload_sha256", sa.String(64), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),  # capped; the hash covers the whole
    sa.Index("ix_dead_letters_reason", "reason"),
)
