"""Make sure the configured database exists before ``migrate`` runs.

A newcomer pointing ``DATABASE_URL`` at a PostgreSQL server where the database is not
created yet gets it created, as ``createdb`` would: connect to the ``postgres``
maintenance database (``template1`` if that one is gone) with the same credentials and
``CREATE DATABASE``. When the role may not create databases, or the server cannot be
reached, the answer is one line saying what to do, not a traceback. SQLite creates its
file by itself: nothing to do there.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

# Keys of Django's OPTIONS that are Django's own, not libpq connection parameters.
DJANGO_ONLY_OPTIONS = {
    "assume_role",
    "isolation_level",
    "pool",
    "prepare_threshold",
    "server_side_binding",
}
MAINTENANCE_DATABASES = ("postgres", "template1")
CONNECT_TIMEOUT_SECONDS = 10


class DatabaseSetupError(Exception):
    """The database is missing and cannot be made here; the message says what to run."""


def _params(settings_dict: dict[str, Any], dbname: str) -> dict[str, Any]:
    params = {
        key: value
        for key, value in (settings_dict.get("OPTIONS") or {}).items()
        if key not in DJANGO_ONLY_OPTIONS
    }
    params["dbname"] = dbname
    for key, param in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host")):
        if settings_dict.get(key):
            params[param] = settings_dict[key]
    if settings_dict.get("PORT"):
        params["port"] = str(settings_dict["PORT"])
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    return params


def _one_line(exc: Exception) -> str:
    return re.sub(r"\s+", " ", str(exc)).strip()


def _where(settings_dict: dict[str, Any]) -> str:
    host = settings_dict.get("HOST") or "the local socket"
    port = settings_dict.get("PORT")
    return f"{host}:{port}" if port and settings_dict.get("HOST") else str(host)


def createdb_command(settings_dict: dict[str, Any]) -> str:
    """What an administrator runs to create the database for this role."""
    parts = ["createdb"]
    if settings_dict.get("HOST"):
        parts += ["-h", str(settings_dict["HOST"])]
    if settings_dict.get("PORT"):
        parts += ["-p", str(settings_dict["PORT"])]
    parts += ["-U", "postgres"]
    if settings_dict.get("USER"):
        parts += ["-O", str(settings_dict["USER"])]
    parts.append(str(settings_dict["NAME"]))
    return shlex.join(parts)


def ensure_database(settings_dict: dict[str, Any]) -> bool:
    """Create the PostgreSQL database of ``settings_dict`` if it does not exist.

    Returns True when it was created, False when there was nothing to do; raises
    DatabaseSetupError (a one-line message) when it is missing and cannot be created,
    or when the server cannot be reached.
    """
    if settings_dict.get("ENGINE") != "django.db.backends.postgresql":
        return False
    name = settings_dict.get("NAME")
    if not name:
        return False  # a libpq service file names it; Django reports a missing NAME

    import psycopg
    from psycopg import errors, sql

    try:
        psycopg.connect(**_params(settings_dict, name)).close()
        return False
    except psycopg.OperationalError as exc:
        first_error = exc

    role = settings_dict.get("USER") or "(the default role)"
    maintenance = None
    for dbname in MAINTENANCE_DATABASES:
        try:
            maintenance = psycopg.connect(**_params(settings_dict, dbname), autocommit=True)
            break
        except psycopg.OperationalError:
            continue
    if maintenance is None:
        raise DatabaseSetupError(
            f"Cannot connect to PostgreSQL at {_where(settings_dict)} as {role}: "
            f"{_one_line(first_error)}"
        )
    with maintenance:
        exists = maintenance.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if exists:
            # It is there, so the connection failed for another reason (say, no CONNECT).
            raise DatabaseSetupError(
                f"Cannot connect to database {name} at {_where(settings_dict)} as {role}: "
                f"{_one_line(first_error)}"
            )
        try:
            maintenance.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except errors.DuplicateDatabase:
            return False  # created by someone else a moment ago
        except errors.InsufficientPrivilege:
            raise DatabaseSetupError(
                f"Database {name} does not exist and role {role} may not create it: "
                f"run `{createdb_command(settings_dict)}` (as a role that may), "
                "then start again."
            ) from None
    return True
