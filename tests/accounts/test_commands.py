import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import Account

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.django_db


def test_createaccount_prints_the_admin_token_on_the_last_line(capsys):
    call_command(
        "createaccount",
        "Initech",
        "--plan",
        "starter",
        "--admin-email",
        "Peter@Initech.example.com",
        "--admin-password",
        "a long enough passphrase",
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("token: ")
    account = Account.objects.get(name="Initech")
    assert account.plan == "starter"
    assert str(account.pk) in lines[0]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {lines[-1].removeprefix('token: ')}")
    me = client.get("/api/v1/me/").json()
    assert me["email"] == "peter@initech.example.com" and me["role"] == "admin"


def test_createaccount_takes_the_password_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "another long passphrase")
    call_command("createaccount", "Hooli", "--admin-email", "gavin@hooli.example.com")
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("token: ")
    assert Account.objects.get(name="Hooli").plan == "free"


def test_createaccount_refuses_a_weak_password_and_creates_nothing(monkeypatch):
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="password"):
        call_command(
            "createaccount",
            "Weak",
            "--admin-email",
            "w@weak.example.com",
            "--admin-password",
            "123",
        )
    with pytest.raises(CommandError, match="ADMIN_PASSWORD"):
        call_command("createaccount", "Weak", "--admin-email", "w@weak.example.com")
    assert not Account.objects.filter(name="Weak").exists()


def test_production_settings_pass_check_deploy(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "false",
        "SECRET_KEY": "x" * 20 + "-production-secret-key-that-is-long-and-random-9f8e7d6c5b4a",
        "ALLOWED_HOSTS": "postkamer.example.com",
        "POSTKAMER_DATA_DIR": str(tmp_path),
    }
    env.pop("HTTPS", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_a_bad_setting_stops_start_up_with_a_clear_message(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "perhaps",
        "POSTKAMER_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "DEBUG='perhaps' is not a boolean" in result.stderr
