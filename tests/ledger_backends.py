"""Both ledger backends for the ledger's behaviour tests: `backend` is parametrized over a
SQLite file in the test's folder and a fresh database in the session's real PostgreSQL
(tests/postgres_fixture.py, started only when a PostgreSQL case runs)."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from prober.ledger.postgres import PostgresConnection
from prober.ledger.store import Ledger

from .postgres_fixture import PostgresCluster

PASSWORD_ENV = "IM_PROBER_TEST_PG_PASSWORD"
# Every table a ledger has (schema v3): a snapshot of them all shows any write.
TABLES = (
    "meta",
    "series",
    "minutes",
    "attempts",
    "verdict_totals",
    "attempt_totals",
    "network_rounds",
    "vantage_minutes",
    "vantage_totals",
    "vantages",
    "chain_heads",
    "chain_seals",
)


@dataclass
class Backend:
    name: str  # "sqlite" or "postgres"
    folder: Path
    cluster: PostgresCluster | None = None
    _databases: dict[str, str] = field(default_factory=dict)

    @property
    def is_postgres(self) -> bool:
        return self.cluster is not None

    @property
    def password(self) -> str | None:
        return None if self.cluster is None else self.cluster.password

    def location(self, name: str = "l") -> Path | str:
        """A ledger's place: the file's path, or a database's URL (created on first use)."""
        if self.cluster is None:
            return self.folder / f"{name}.sqlite3"
        if name not in self._databases:
            self._databases[name] = self.cluster.url(self.cluster.create_database())
        return self._databases[name]

    def open(self, name: str = "l", **kwargs: Any) -> Ledger:
        if self.cluster is not None:
            kwargs.setdefault("password", self.cluster.password)
        return Ledger(self.location(name), **kwargs)

    def config_ledger(self, name: str = "ledger") -> str:
        """The config's `ledger:` line for this ledger (a config in `folder`); a PostgreSQL
        one takes its password from the environment, as a deployment's Secret does."""
        location = self.location(name)
        if isinstance(location, Path):
            return f"ledger: {{path: {location.name}}}"
        return f"ledger: {{url: '{location}', password: {{env: {PASSWORD_ENV}}}}}"

    def raw(self, name: str = "l") -> Any:
        """A plain connection to the ledger for checks (`execute(sql with ?, params)`)."""
        location = self.location(name)
        if isinstance(location, Path):
            return sqlite3.connect(location, isolation_level=None)
        return PostgresConnection(location, self.password, readonly=False)

    def integrity(self, name: str = "l") -> str:
        db = self.raw(name)
        try:
            if self.cluster is None:
                return db.execute("PRAGMA integrity_check").fetchone()[0]
            return db.integrity_check()
        finally:
            db.close()

    def snapshot(self, name: str = "l") -> object:
        """What changes with any write: the file's bytes, or every row of every table."""
        location = self.location(name)
        if isinstance(location, Path):
            return hashlib.sha256(location.read_bytes()).hexdigest()
        db = self.raw(name)
        try:
            return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}
        finally:
            db.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path)
    cluster = request.getfixturevalue("postgres")
    request.getfixturevalue("monkeypatch").setenv(PASSWORD_ENV, cluster.password)
    return Backend("postgres", tmp_path, cluster)
