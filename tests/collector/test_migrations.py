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
