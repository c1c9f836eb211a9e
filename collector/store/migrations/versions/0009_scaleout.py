"""More than one collector: the ingest ledger in the agents' rows, vault ids, the leader's epoch.

Any collector of a cluster may receive any agent's next message, so the whole ledger (seqs past a
hole, reported holes, the clock verdict) moves from memory into ``agents`` under a version, and
every vault leaf is named by (vault id, index). Existing rows belong to the vault ``main``.

Revision ID: 0009
Revises: 0008
"""
import time

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

LEAF_TABLES = ("case_evidence", "case_actions", "agent_reports", "venue_reports")


def upgrade() -> None:
    with op.batch_alter_table("agents") as t:
        t.add_column(sa.Column("above", sa.JSON, nullable=False, server_default="[]"))
        t.add_column(sa.Column("gaps", sa.JSON, nullable=False, server_default="{}"))
        t.add_column(sa.Column("clock_skewed", sa.Boolean, nullable=False, server_default=sa.false()))
        t.add_column(sa.Column("ledger_version", sa.BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("records") as t:
        t.add_column(sa.Column("vault_id", sa.String(64), nullable=False, server_default="main"))
        t.drop_index("ix_records_vault")
        t.create_index("ix_records_vault", ["vault_id", "vault_index"])
        t.create_index("ix_records_vault_id", ["vault_id", "id"])
    for name in LEAF_TABLES:
        with op.batch_alter_table(name) as t:
            t.add_column(sa.Column("vault_id", sa.String(64), nullable=False, server_default="main"))
    _seqs_above_into_agents()
    vaults = op.create_table(
        "vaults",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False, server_default=""),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("indexed_upto", sa.BigInteger, nullable=False),
    )
    top = op.get_bind().execute(sa.text(
        "SELECT max(m) FROM (SELECT max(vault_index) AS m FROM records UNION ALL "
        "SELECT max(vault_index) FROM case_actions UNION ALL SELECT max(vault_index) FROM venue_reports) AS t")).scalar()
    if top is not None:
        op.bulk_insert(vaults, [{"id": "main", "host": "", "opened_at": time.time(), "indexed_upto": int(top)}])
    leader = op.create_table(
        "cluster_leader",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("holder", sa.String(64)),
        sa.Column("since", sa.Float),
    )
    op.bulk_insert(leader, [{"id": 1, "epoch": 0, "holder": None, "since": None}])


def _seqs_above_into_agents() -> None:
    """Seqs stored past a hole were rebuilt from ``records`` at each start; now the row keeps them."""
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT r.agent_id, r.seq FROM records r JOIN agents a ON a.id = r.agent_id "
                                "WHERE r.seq > a.acked_seq ORDER BY r.agent_id, r.seq")).all()
    above: dict[str, list[int]] = {}
    for agent_id, seq in rows:
        above.setdefault(agent_id, []).append(int(seq))
    agents = sa.table("agents", sa.column("id", sa.String), sa.column("above", sa.JSON))
    for agent_id, seqs in above.items():
        conn.execute(agents.update().where(agents.c.id == agent_id).values(above=seqs))


def downgrade() -> None:
    op.drop_table("cluster_leader")
    op.drop_table("vaults")
    for name in LEAF_TABLES:
        with op.batch_alter_table(name) as t:
            t.drop_column("vault_id")
    with op.batch_alter_table("records") as t:
        t.drop_index("ix_records_vault_id")
        t.drop_index("ix_records_vault")
        t.create_index("ix_records_vault", ["vault_index"])
        t.drop_column("vault_id")
    with op.batch_alter_table("agents") as t:
        for col in ("ledger_version", "clock_skewed", "gaps", "above"):
            t.drop_column(col)
