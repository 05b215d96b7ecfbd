"""A newcomer pointing DATABASE_URL at a PostgreSQL server where the database does not
exist yet: ``manage.py ensure_database`` (run by scripts/run before ``migrate``)
creates it when the role may, and otherwise says in one line what to run.

Against the real PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres); each test
uses databases and roles of its own and drops them after."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import dj_database_url
import pytest

from core.database import DatabaseSetupError, ensure_database

ROOT = Path(__file__).resolve().parent.parent.parent
HOST, PORT = "127.0.0.1", 5432


@pytest.fixture(scope="module")
def pg_admin():
    psycopg = pytest.importorskip("psycopg")
    try:
        connection = psycopg.connect(
            host=HOST,
            port=PORT,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=3,
        )
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {HOST}:{PORT} as postgres: {exc}")
    with connection:
        yield connection


def _exists(pg_admin, name: str) -> bool:
    row = pg_admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    return row is not None


@pytest.fixture
def database_name(pg_admin):
    name = f"postkamer_newcomer_{uuid.uuid4().hex[:10]}"
    yield name
    pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _role(pg_admin, *, createdb: bool):
    name = f"postkamer_role_{uuid.uuid4().hex[:10]}"
    pg_admin.execute(f'CREATE ROLE "{name}" LOGIN {"CREATEDB" if createdb else "NOCREATEDB"}')
    return name


@pytest.fixture
def role_without_createdb(pg_admin):
    name = _role(pg_admin, createdb=False)
    yield name
    pg_admin.execute(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture
def role_with_createdb(pg_admin, database_name):
    # asked for after database_name, so dropped before it: the database goes first
    name = _role(pg_admin, createdb=True)
    yield name
    pg_admin.execute(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)')
    pg_admin.execute(f'DROP ROLE IF EXISTS "{name}"')


def manage(tmp_path, database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "POSTKAMER_DATA_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_database_is_created_when_the_role_may_and_migrate_then_runs(
    pg_admin, database_name, role_with_createdb, tmp_path
):
    url = f"postgres://{role_with_createdb}@{HOST}:{PORT}/{database_name}"
    assert not _exists(pg_admin, database_name)

    first = manage(tmp_path, url, "ensure_database")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"Created database {database_name}."
    assert _exists(pg_admin, database_name)
    owner = pg_admin.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [database_name]
    ).fetchone()
    assert owner == (role_with_createdb,)  # as createdb run by that role would

    again = manage(tmp_path, url, "ensure_database")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")

    migrated = manage(tmp_path, url, "migrate", "--noinput", "-v0")
    assert migrated.returncode == 0, migrated.stderr


def test_a_role_that_may_not_create_databases_is_told_in_one_line_what_to_run(
    pg_admin, database_name, role_without_createdb, tmp_path
):
    url = f"postgres://{role_without_createdb}@{HOST}:{PORT}/{database_name}"
    result = manage(tmp_path, url, "ensure_database")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"CommandError: Database {database_name} does not exist and role "
        f"{role_without_createdb} may not create it: run `createdb -h {HOST} -p {PORT} "
        f"-U postgres -O {role_without_createdb} {database_name}` (as a role that may), "
        "then start again."
    ]
    assert not _exists(pg_admin, database_name)


def test_an_existing_database_is_left_alone(pg_admin):
    settings_dict = dj_database_url.parse(f"postgres://postgres@{HOST}:{PORT}/postgres")
    assert ensure_database(settings_dict) is False


def test_a_server_that_cannot_be_reached_is_one_line_too():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind((HOST, 0))
        free_port = probe.getsockname()[1]
    settings_dict = dj_database_url.parse(f"postgres://postgres@{HOST}:{free_port}/postkamer")
    with pytest.raises(DatabaseSetupError) as refused:
        ensure_database(settings_dict)
    message = str(refused.value)
    assert message.startswith(f"Cannot connect to PostgreSQL at {HOST}:{free_port} as postgres:")
    assert "\n" not in message


def test_sqlite_needs_nothing():
    assert ensure_database(dj_database_url.parse("sqlite:////tmp/never-created.sqlite3")) is False
    assert not Path("/tmp/never-created.sqlite3").exists()


def test_scripts_run_ensures_the_database_before_migrating():
    script = (ROOT / "scripts" / "run").read_text()
    assert 0 < script.index('manage[@]}" ensure_database') < script.index("migrate --noinput")
