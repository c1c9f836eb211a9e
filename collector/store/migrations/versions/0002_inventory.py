"""Registered-device inventory per venue, versioned.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("venues") as batch:
        batch.add_column(sa.Column("inventory_version", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "devices",
        sa.Column("venue_id", sa.String(64), sa.ForeignKey("venues.id"), primary_key=True),
        sa.Column("mac", sa.String(17), primary_key=True),
        sa.Column("ip", sa.String(45)),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("room", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("devices")
    with op.batch_alter_table("venues") as batch:
        batch.drop_column("inventory_version")
