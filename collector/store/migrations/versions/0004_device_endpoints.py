"""Cameras' and recorders' endpoints in the inventory: vendor, stream path, HTTP port, channel.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("vendor", sa.String(20), nullable=False, server_default=""))
        batch.add_column(sa.Column("stream", sa.String(300), nullable=False, server_default=""))
        batch.add_column(sa.Column("http_port", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("channel", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        for name in ("channel", "http_port", "stream", "vendor"):
            batch.drop_column(name)
