"""Alembic environment: runs on the connection the store hands over (no alembic.ini needed)."""

from alembic import context

from collector.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
