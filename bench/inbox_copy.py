"""Loading the inbox benchmark's rows with COPY: values in PostgreSQL's COPY text
format, a COPY per table on its own connection, and the table of what was loaded
(``bench_inbox_meta``), read by ``--reuse``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bench import harness

META_TABLE = "bench_inbox_meta"


def read_meta(db: str) -> dict | None:
    import psycopg

    if not harness.database_exists(db):
        return None
    with psycopg.connect(harness.pg_url(db), autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", [META_TABLE]).fetchone()[0]
        if exists is None:
            return None
        row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'load'").fetchone()
        return row[0] if row else None


def write_meta(db: str, meta: dict) -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    with psycopg.connect(harness.pg_url(db), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value jsonb)")
        conn.execute(
            f"INSERT INTO {META_TABLE} (key, value) VALUES ('load', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            [Jsonb(meta)],
        )


def esc(value: str) -> str:
    """A string in PostgreSQL COPY text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


def js(value) -> str:
    return esc(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def ts(epoch: float | None) -> str:
    if epoch is None:
        return "\\N"
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class CopyTable:
    """COPY lines for one model, in the column order the generator writes, plus any
    column the generator does not know (added since by a migration) filled with the
    field's default, so a new nullable or defaulted field never breaks the load."""

    def __init__(self, model, columns: list[str] | str):
        from django.db import connection, models

        if isinstance(columns, str):  # "id created_at ..."
            columns = columns.split()
        self.model = model
        self.table = model._meta.db_table
        fields = {f.column: f for f in model._meta.concrete_fields}
        unknown = [c for c in columns if c not in fields]
        if unknown:
            raise SystemExit(f"{self.table}: the generator writes {unknown}, which the model lacks")
        extra_cols, extra_vals = [], []
        now = datetime.now(UTC).timestamp()
        for column, field in fields.items():
            if column in columns:
                continue
            if field.primary_key and isinstance(field, (models.AutoField, models.BigAutoField)):
                continue  # identity column: the database numbers the rows
            if field.has_default():
                value = field.get_default()
            elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                value = datetime.fromtimestamp(now, UTC)
            elif field.null:
                value = None
            elif field.blank and isinstance(field, (models.CharField, models.TextField)):
                value = ""  # e.g. a stored summary, filled in by a later load phase
            else:
                raise SystemExit(
                    f"{self.table}.{column} is NOT NULL without a default: teach bench/inbox_load.py "
                    "what to put there"
                )
            extra_cols.append(column)
            extra_vals.append(self._format(field, value, connection))
        self.columns = columns + extra_cols
        self.suffix = ("\t" + "\t".join(extra_vals)) if extra_vals else ""
        self.extra_columns = extra_cols

    @staticmethod
    def _format(field, value, connection) -> str:
        from django.db import models

        if value is None:
            return "\\N"
        if isinstance(field, models.JSONField):
            return js(value)
        if isinstance(field, models.BooleanField):
            return "t" if value else "f"
        if isinstance(value, datetime):
            return value.isoformat()
        return esc(str(field.get_db_prep_save(value, connection)))

    def statement(self) -> str:
        cols = ", ".join(f'"{c}"' for c in self.columns)
        return f'COPY "{self.table}" ({cols}) FROM STDIN'

    def line(self, values) -> str:
        return "\t".join(values) + self.suffix + "\n"


class CopyStream:
    """A COPY into one table on its own connection, fed line by line in chunks."""

    CHUNK = 4000

    def __init__(self, db: str, table: CopyTable):
        import psycopg
        from psycopg.copy import QueuedLibpqWriter

        self.conn = psycopg.connect(harness.pg_url(db))
        prepare_load_session(self.conn)
        self.cursor = self.conn.cursor()
        self.table = table
        self._cm = self.cursor.copy(table.statement(), writer=QueuedLibpqWriter(self.cursor))
        self.copy = self._cm.__enter__()
        self.buffer: list[str] = []
        self.rows = 0

    def add(self, values) -> None:
        self.buffer.append(self.table.line(values))
        if len(self.buffer) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.copy.write("".join(self.buffer))
            self.rows += len(self.buffer)
            self.buffer = []

    def close(self) -> int:
        self.flush()
        self._cm.__exit__(None, None, None)
        self.conn.commit()
        self.conn.close()
        return self.rows


def prepare_load_session(conn) -> None:
    # FK triggers off for this session (superuser): every id is generated here and
    # the references are checked after the load (check_references).
    conn.execute("SET session_replication_role = replica")
    conn.execute("SET synchronous_commit = off")
    conn.execute("SET maintenance_work_mem = '512MB'")
