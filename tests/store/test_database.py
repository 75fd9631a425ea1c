"""The store's connection settings and errors never echo a secret."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from gateway.errors import ConfigError, Unstorable
from gateway.store.database import Database
from tests.store.rows import JOBS, T0

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{SECRET}@db.example/notigate",  # no driver: asyncpg is the one we run
        f"postgresql+psycopg2://app:{SECRET}@db.example/notigate",
        f"mysql+aiomysql://app:{SECRET}@db.example/notigate",
        f"not a url ://app:{SECRET}@db",
    ],
)
def test_a_database_url_we_cannot_use_is_named_with_its_password_masked(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Database(url)
    message = str(refused.value)
    assert SECRET not in message and "***" in message and "DATABASE_URL" in message
    assert "postgresql+asyncpg://" in message  # says what would work


async def test_a_refused_value_is_reported_without_the_statements_parameters(database: Database) -> None:
    """hide_parameters: the error (and its cause, which a traceback prints) names no value."""
    row = {
        "id": "j_1",
        "queue": "ada.lovelace@example.com",
        "deliveries": ["otp 918273"],
        "priority": 2**63,  # beyond the column on both stores
        "run_at": T0,
        "enqueued_at": None,
        "created_at": T0,
    }
    with pytest.raises(Unstorable) as refused:
        async with database.begin() as connection:
            await connection.execute(sa.insert(JOBS), [row])
    chain = []
    seen: BaseException | None = refused.value
    while seen is not None:
        chain.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    text = "\n".join(chain)
    assert "ada.lovelace" not in text and "918273" not in text, text
