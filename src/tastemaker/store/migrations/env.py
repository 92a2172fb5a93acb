"""Alembic environment: runs on the connection tastemaker hands over (see ``store.engine.migrate``)."""

from alembic import context

from tastemaker.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("tastemaker migrations run through tastemaker.store.engine.migrate(engine)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
