"""Alembic environment: runs migrations against the configured database."""

from __future__ import annotations

from alembic import context

from app.db import make_engine
from app.models import Base
from config.settings import load

config = context.config
url = config.attributes.get("database_url") or load()["DATABASE_URL"]


def run() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
