"""Bulk loading for the console bench (bench/console_data.py): one loader per database.

SQLite: the stdlib `sqlite3` module, executemany in large transactions, journal_mode=WAL
(as the service runs) and synchronous=OFF while loading (a crash would only lose a bench
file). PostgreSQL: psycopg's COPY, then VACUUM ANALYZE, as autovacuum would after a bulk
load. Both drop a table's secondary indexes while it is loaded and make them again from
their own stored definitions, so the result is the schema the migrations made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url


def loader_for(database_url: str) -> SqliteLoader | PostgresLoader:
    """The loader for this SQLAlchemy URL."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return SqliteLoader(Path(url.database))
    if url.get_backend_name() == "postgresql":
        return PostgresLoader(url)
    raise SystemExit(f"the console bench runs on SQLite or PostgreSQL, not {url.get_backend_name()}")


class SqliteLoader:
    """Loads a SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path, self.connection = path, None

    def recreate(self) -> None:
        """No file (nor WAL beside it): the migrations make it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    @contextlib.contextmanager
    def connected(self) -> Iterator[None]:
        import sqlite3

        self.connection = sqlite3.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=OFF", "cache_size=-500000", "temp_store=MEMORY"):
            self.connection.execute(f"PRAGMA {pragma}")
        self.connection.execute("BEGIN")
        try:
            yield
        finally:
            self.connection.close()

    def rows(self, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        """Insert the rows (in the open transaction)."""
        marks = ", ".join("?" * len(columns))
        self.connection.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def commit(self) -> None:
        self.connection.execute("COMMIT")
        self.connection.execute("BEGIN")

    def indexes(self, table: str) -> list[tuple[str, str]]:
        """(name, CREATE INDEX statement) of the table's own indexes (not its key's)."""
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL"
        return self.connection.execute(query, (table,)).fetchall()

    @contextlib.contextmanager
    def without_indexes(self, *tables: str) -> Iterator[None]:
        """The tables' secondary indexes dropped while the block runs, then made again."""
        saved = [index for table in tables for index in self.indexes(table)]
        for name, _ in saved:
            self.connection.execute(f"DROP INDEX {name}")
        yield
        for _, statement in saved:
            self.connection.execute(statement)
        self.commit()

    def finish(self) -> None:
        """Commit, and leave a checkpointed file (no statistics: the service never runs ANALYZE)."""
        self.connection.execute("COMMIT")
        self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class PostgresLoader:
    """Loads a PostgreSQL database (dropped and made again by `recreate`)."""

    def __init__(self, url) -> None:
        self.url, self.connection = url, None

    def _dsn(self, database: str) -> str:
        url = self.url.set(drivername="postgresql", database=database)
        return url.render_as_string(hide_password=False)

    def recreate(self) -> None:
        import psycopg

        with psycopg.connect(self._dsn("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.url.database}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{self.url.database}"')

    @contextlib.contextmanager
    def connected(self) -> Iterator[None]:
        import psycopg

        with psycopg.connect(self._dsn(self.url.database)) as connection:
            self.connection = connection
            connection.execute("SET TIME ZONE 'UTC'")
            yield

    def rows(self, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        """COPY the rows in (in the open transaction)."""
        with self.connection.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def commit(self) -> None:
        self.connection.commit()

    def indexes(self, table: str) -> list[tuple[str, str]]:
        """(name, CREATE INDEX statement) of the table's indexes that back no constraint."""
        query = (
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
        return self.connection.execute(query, (table,)).fetchall()

    @contextlib.contextmanager
    def without_indexes(self, *tables: str) -> Iterator[None]:
        """The tables' secondary indexes dropped while the block runs, then made again."""
        saved = [index for table in tables for index in self.indexes(table)]
        for name, _ in saved:
            self.connection.execute(f'DROP INDEX "{name}"')
        yield
        self.connection.execute("SET maintenance_work_mem = '512MB'")
        for _, statement in saved:
            self.connection.execute(statement)
        self.commit()

    def finish(self) -> None:
        """Sequences past the loaded ids, committed, then VACUUM ANALYZE (autovacuum's job)."""
        for table, column in (("api_keys", "id"), ("messages", "id"), ("upstream_attempts", "id"),
                              ("conversations", "pk"), ("audit_log", "id")):  # fmt: skip
            self.connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                f"(SELECT COALESCE(max({column}), 0) + 1 FROM {table}), false)"
            )
        self.connection.commit()
        self.connection.autocommit = True
        self.connection.execute("VACUUM ANALYZE")
