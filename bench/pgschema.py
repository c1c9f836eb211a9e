"""A throwaway PostgreSQL schema for one benchmark run: made before, dropped after, whatever happens.

The benches (ingest, readiness, rules, web) run on the shared test server at 127.0.0.1:5432, so
each run works in a fresh schema of its own (``search_path`` in the URL) and leaves nothing behind.
Benches are run as ``.venv/bin/python bench/x.py``, so ``bench/`` is on ``sys.path`` and they
``from pgschema import pg_schema``.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa

#: The test server's database (trust auth), as the test fixtures use it.
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def with_search_path(url: str, schema: str) -> str:
    """``url`` with libpq's ``options=-csearch_path=<schema>``, so every connection works in ``schema``."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@contextmanager
def pg_schema(url: str, prefix: str = "bench") -> Iterator[str]:
    """A URL into a fresh schema ``<prefix>_<random>`` on the server of ``url``; the schema is
    dropped with everything in it when the block ends. A URL that is not PostgreSQL passes
    through unchanged (SQLite needs no cleanup here)."""
    if not url.startswith("postgresql"):
        yield url
        return
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        try:
            yield with_search_path(url, name)
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
    finally:
        admin.dispose()
