"""Inserting many rows at once, with COPY on PostgreSQL.

Django's ``bulk_create`` sends PostgreSQL one array per column (``INSERT ... SELECT
FROM UNNEST``), and psycopg writes those arrays as text in Python, escaping each
quote and backslash of each value through a regular expression. For message bodies
(HTML is full of quotes) that escaping was the biggest part of the worker's cost of
storing a message (bench/insert.py). ``COPY ... (FORMAT BINARY)`` sends each value
as it is, and psycopg's C code packs the rows.

The rows are the ones ``bulk_create`` would write: the same ``pre_save`` and
``get_db_prep_save`` of each field. Whatever COPY cannot do goes through
``bulk_create``, which then does or raises exactly what it always did: another
database, a model whose ids the database hands out, a column type not mapped below,
a unique conflict, a value the server refuses or psycopg cannot send in binary. A
COPY that failed is undone first, to a savepoint, so the caller's transaction goes on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from django.db import DatabaseError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model
from django.db.models.fields import AutoFieldMixin

# Column types (as Django declares them, without their length) that COPY's binary
# format is given, by the name psycopg knows them under.
_COPY_TYPES = {
    "uuid": "uuid",
    "timestamp with time zone": "timestamptz",
    "date": "date",
    "varchar": "varchar",
    "text": "text",
    "jsonb": "jsonb",
    "boolean": "bool",
    "smallint": "int2",
    "integer": "int4",
    "bigint": "int8",
}
_LENGTH = re.compile(r"\(\d+\)$")


def _copy_types(model: type[Model], connection: BaseDatabaseWrapper) -> list[str] | None:
    if isinstance(model._meta.pk, AutoFieldMixin):
        return None  # ids the database hands out: bulk_create reads them back, COPY can't
    types = []
    for field in model._meta.concrete_fields:
        declared = _LENGTH.sub("", field.db_type(connection) or "")
        if declared not in _COPY_TYPES:
            return None
        types.append(_COPY_TYPES[declared])
    return types


def _copy(
    model: type[Model], objs: Sequence[Model], types: list[str], connection: BaseDatabaseWrapper
) -> None:
    fields = model._meta.concrete_fields
    quote = connection.ops.quote_name
    # A concrete field always has a column; the stubs type Field.column as optional.
    columns = ", ".join(quote(field.column) for field in fields)  # type: ignore[arg-type]
    statement = f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN (FORMAT BINARY)"
    # psycopg's own cursor (Django's wrapper has no COPY), with Django's exceptions
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(statement) as copy,
    ):
        copy.set_types(types)
        for obj in objs:
            if obj.pk is None:
                obj.pk = obj._meta.pk.get_pk_value_on_save(obj)
            copy.write_row(
                [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]
            )


def bulk_insert(
    model: type[Model], objs: Sequence[Model], *, ignore_conflicts: bool = False
) -> None:
    """``model.objects.bulk_create(objs, ignore_conflicts=...)``, faster on PostgreSQL."""
    if not objs:
        return
    alias = router.db_for_write(model)
    connection = connections[alias]
    types = _copy_types(model, connection) if connection.vendor == "postgresql" else None
    if types is not None:
        try:
            with transaction.atomic(using=alias):
                _copy(model, objs, types, connection)
        except (DatabaseError, TypeError, ValueError):
            pass  # rolled back to the savepoint: bulk_create decides
        else:
            for obj in objs:
                obj._state.adding = False
                obj._state.db = alias
            return
    model._default_manager.using(alias).bulk_create(objs, ignore_conflicts=ignore_conflicts)
