"""Alembic environment: runs on the connection `gateway.store.migrate` hands it.

Programmatic use only (no alembic.ini): `notigate db upgrade` and `./dev run` call
`gateway.store.migrate.upgrade()`, which shares its async engine's connection here.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context

from gateway.store.tables import METADATA, UTCDateTime


def render_item(kind: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render our column types as plain SQLAlchemy ones: a migration must not import the
    model code it migrates, or changing the models later would break old revisions."""
    if kind != "type":
        return False
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type(obj).__name__ == "AutoString":
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=METADATA,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
