"""The Alembic migrations build exactly the tables schema.py describes, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from collector.store import Store
from collector.store import schema


def test_migrated_database_matches_the_schema(store: Store) -> None:
    """No table, column, index or constraint differs: a schema edit without its migration fails here."""
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert [d for d in diff if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")] == []


def test_0009_moves_the_ledger_into_the_rows_and_names_the_vault(db_url: str) -> None:
    """An index of before clusters: seqs stored past a hole become the row's ``above``, the vault
    ``main`` is registered as indexed up to its highest leaf, and every row belongs to it."""
    from pathlib import Path

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    store = Store(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(schema.__file__).parent / "migrations"))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0008")
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO venues (id, name, created_at, inventory_version) VALUES ('V1', 'V1', 0, 0)"))
        conn.execute(sa.text("INSERT INTO agents (id, venue_id, public_key, enrolled_at, revoked, online, acked_seq) "
                             "VALUES ('a1', 'V1', 'k', 0, false, false, 2)"))
        for seq, leaf in ((1, 0), (2, 0), (4, 1), (6, 2)):
            conn.execute(sa.text("INSERT INTO records (agent_id, venue_id, seq, stream, kind, at, received_at, data, digest, "
                                 "vault_index) VALUES ('a1', 'V1', :seq, 'ev', 'k', 0, 0, '{}', 'd', :leaf)"),
                         {"seq": seq, "leaf": leaf})
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(schema.agents.c.above, schema.agents.c.ledger_version)).one() == ([4, 6], 0)
        assert conn.execute(sa.select(schema.vaults.c.id, schema.vaults.c.indexed_upto)).all() == [("main", 2)]
        assert set(conn.execute(sa.select(schema.records.c.vault_id)).scalars()) == {"main"}
        assert conn.execute(sa.select(schema.cluster_leader.c.epoch)).scalar() == 0
    store.close()
