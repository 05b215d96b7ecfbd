"""The connect forms keep what was typed, pre-fill the servers from the address and
show the sign-in buttons first (disabled, with what to do, where not set up)."""

from __future__ import annotations

import re

import pytest

from inboxes.models import Inbox, Mailbox

pytestmark = pytest.mark.django_db

# Each provider's domains and the settings they pre-fill:
# (imap host, port, security, user name), (smtp host, port, security, user name).
PRESET_CASES = [
    ("ann@gmail.com", ("imap.gmail.com", 993, "ssl", "ann@gmail.com"),
     ("smtp.gmail.com", 587, "starttls", "ann@gmail.com")),
    ("ann@googlemail.com", ("imap.gmail.com", 993, "ssl", "ann@googlemail.com"),
     ("smtp.gmail.com", 587, "starttls", "ann@googlemail.com")),
    ("ann@outlook.com", ("outlook.office365.com", 993, "ssl", "ann@outlook.com"),
     ("smtp.office365.com", 587, "starttls", "ann@outlook.com")),
    ("ann@hotmail.com", ("outlook.office365.com", 993, "ssl", "ann@hotmail.com"),
     ("smtp.office365.com", 587, "starttls", "ann@hotmail.com")),
    ("ann@live.com", ("outlook.office365.com", 993, "ssl", "ann@live.com"),
     ("smtp.office365.com", 587, "starttls", "ann@live.com")),
    ("ann@icloud.com", ("imap.mail.me.com", 993, "ssl", "ann"),
     ("smtp.mail.me.com", 587, "starttls", "ann@icloud.com")),
    ("ann@me.com", ("imap.mail.me.com", 993, "ssl", "ann"),
     ("smtp.mail.me.com", 587, "starttls", "ann@me.com")),
    ("ann@mac.com", ("imap.mail.me.com", 993, "ssl", "ann"),
     ("smtp.mail.me.com", 587, "starttls", "ann@mac.com")),
    ("ann@yahoo.com", ("imap.mail.yahoo.com", 993, "ssl", "ann@yahoo.com"),
     ("smtp.mail.yahoo.com", 465, "ssl", "ann@yahoo.com")),
    ("ann@fastmail.com", ("imap.fastmail.com", 993, "ssl", "ann@fastmail.com"),
     ("smtp.fastmail.com", 465, "ssl", "ann@fastmail.com")),
    ("ann@zoho.com", ("imap.zoho.com", 993, "ssl", "ann@zoho.com"),
     ("smtp.zoho.com", 465, "ssl", "ann@zoho.com")),
    ("ann@gmx.de", ("imap.gmx.net", 993, "ssl", "ann@gmx.de"),
     ("mail.gmx.net", 587, "starttls", "ann@gmx.de")),
    ("ann@gmx.com", ("imap.gmx.com", 993, "ssl", "ann@gmx.com"),
     ("mail.gmx.com", 587, "starttls", "ann@gmx.com")),
    ("ann@web.de", ("imap.web.de", 993, "ssl", "ann@web.de"),
     ("smtp.web.de", 587, "starttls", "ann@web.de")),
    ("ann@proton.me", ("127.0.0.1", 1143, "starttls", "ann@proton.me"),
     ("127.0.0.1", 1025, "starttls", "ann@proton.me")),
    ("ann@protonmail.com", ("127.0.0.1", 1143, "starttls", "ann@protonmail.com"),
     ("127.0.0.1", 1025, "starttls", "ann@protonmail.com")),
]  # fmt: skip

SERVER_KEYS = ("host", "port", "security", "username")


def _servers(answer: dict) -> tuple[tuple, tuple]:
    return tuple(  # type: ignore[return-value]
        tuple(answer[server][key] for key in SERVER_KEYS) for server in ("imap", "smtp")
    )


def _form(payload: dict, **extra) -> dict:
    form = {"address": payload["address"]}
    for server in ("imap", "smtp"):
        for key, value in payload[server].items():
            form[f"{server}_{key}"] = value
    return {**form, **extra}


def _value_of(page: str, name: str) -> str | None:
    """The value attribute of the input named ``name`` (first one on the page)."""
    tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', page)
    assert tag, f"no input {name}"
    value = re.search(r'value="([^"]*)"', tag.group(0))
    return value.group(1) if value else None


def _selected(page: str, name: str, select_id: str = "") -> str:
    select_id = select_id or rf"id_\w+_{name}"
    select = re.search(rf'<select name="{name}" id="{select_id}".*?</select>', page, re.S)
    assert select
    chosen = re.search(r'<option value="([^"]*)" selected>', select.group(0))
    assert chosen
    return chosen.group(1)


# --- presets --------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "imap", "smtp"), PRESET_CASES)
def test_each_providers_domain_pre_fills_its_servers(client, member, address, imap, smtp):
    client.force_login(member)
    answer = client.get("/settings/email/servers/", {"address": address}).json()
    assert answer["found"] is True
    assert answer["source"] == "preset"
    assert _servers(answer) == (imap, smtp)
    assert answer["note"].startswith("Filled in the server settings for")


def test_an_unknown_domain_pre_fills_nothing_and_says_what_to_do(client, member, fake_dns):
    client.force_login(member)
    answer = client.get("/settings/email/servers/", {"address": "bo@acme.example.com"}).json()
    assert answer["found"] is False
    assert "No server settings are known for acme.example.com" in answer["note"]
    # Lookups are off by default: nobody was asked for the domain's settings.
    assert fake_dns.calls == []


def test_the_server_settings_endpoint_needs_a_login(client):
    response = client.get("/settings/email/servers/", {"address": "ann@gmail.com"})
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_without_javascript_the_fill_button_fills_the_servers_and_keeps_the_rest(client, member):
    # Given Bo typed his address, a password and chose how much history to import
    client.force_login(member)
    page = client.post(
        "/settings/email/",
        {
            "address": "bo@icloud.com",
            "imap_password": "app-specific-1",
            "backfill_days": "90",
            "fill_servers": "1",
        },
    )
    # Then the page comes back filled in, nothing is connected, nothing is an error
    body = page.content.decode()
    assert page.status_code == 200
    assert _value_of(body, "address") == "bo@icloud.com"
    assert _value_of(body, "imap_host") == "imap.mail.me.com"
    assert _value_of(body, "imap_port") == "993"
    assert _value_of(body, "imap_username") == "bo"
    assert _value_of(body, "smtp_host") == "smtp.mail.me.com"
    assert _value_of(body, "smtp_port") == "587"
    assert _value_of(body, "smtp_username") == "bo@icloud.com"
    assert _selected(body, "imap_security") == "ssl"
    assert _selected(body, "smtp_security") == "starttls"
    assert _selected(body, "backfill_days") == "90"
    assert _value_of(body, "imap_password") == "app-specific-1"
    assert "Filled in the server settings for iCloud Mail" in body
    assert "errorlist" not in body
    assert not Mailbox.objects.exists()


def test_the_team_form_fills_its_servers_without_javascript_too(client, admin):
    inbox = Inbox.objects.create(account=admin.account, name="Support")
    client.force_login(admin)
    page = client.post(
        f"/settings/inboxes/{inbox.pk}/connect/",
        {
            "address": "support@fastmail.com",
            "fill_servers": "1",
            "acknowledge_team_visibility": "on",
        },
    )
    body = page.content.decode()
    assert page.status_code == 200
    card = body[body.index(f'id="connect-team-{inbox.pk}"') :]
    assert _value_of(card, "imap_host") == "imap.fastmail.com"
    assert _value_of(card, "smtp_port") == "465"
    assert re.search(r'name="acknowledge_team_visibility"[^>]*required checked', card)
    assert not Mailbox.objects.exists()


@pytest.mark.parametrize(
    "path", ["/settings/inboxes/{pk}/connect/", "/settings/inboxes/{pk}/setup/email/"]
)
def test_both_team_forms_fill_their_servers_without_javascript(client, admin, path):
    """The inboxes page and step 2 of creating an inbox behave alike."""
    inbox = Inbox.objects.create(account=admin.account, name="Support")
    client.force_login(admin)
    page = client.post(
        path.format(pk=inbox.pk),
        {
            "address": "support@fastmail.com",
            "fill_servers": "1",
            "acknowledge_team_visibility": "on",
        },
    )
    body = page.content.decode()
    assert page.status_code == 200
    card = body[body.index(f'id="connect-team-{inbox.pk}"') :]
    assert _value_of(card, "imap_host") == "imap.fastmail.com"
    assert re.search(r'name="acknowledge_team_visibility"[^>]*required checked', card)
    assert not Mailbox.objects.exists()


# --- validation before the limiter -----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"address": "not an address"}, "address"),
        ({"imap_host": ""}, "imap_host"),
        ({"smtp_port": "99999"}, "smtp_port"),
        ({"imap_port": "nine"}, "imap_port"),
    ],
)
def test_a_validation_error_is_reported_and_never_counted_as_a_failed_test(
    client, member, settings, connect_payload, change, field
):
    # Given one failed test is all Bo may have
    settings.CONNECTION_TEST_RATE_PER_USER = "1/h"
    client.force_login(member)
    good = _form(connect_payload("bo@acme.example.com"))
    # When he submits a form with a mistake, several times, on both ways in
    for _ in range(3):
        page = client.post("/settings/email/", {**good, **change})
        assert page.status_code == 400
        assert "errorlist" in page.content.decode()
        tested = client.post("/settings/email/test/", {**good, **change})
        assert "Fill in every field before testing." in tested.content.decode()
    # Then the mistakes were not counted: his first real test still runs, and succeeds
    connected = client.post("/settings/email/", good)
    assert connected.status_code == 302
    assert Mailbox.objects.get().address == "bo@acme.example.com"


def test_a_malformed_address_is_a_field_error_even_when_over_the_limit(
    client, member, settings, connect_payload
):
    settings.CONNECTION_TEST_RATE_PER_USER = "1/h"
    client.force_login(member)
    good = _form(connect_payload("bo@acme.example.com"))
    refused = client.post("/settings/email/", {**good, "imap_port": "1"})
    assert refused.status_code == 422  # the one failure allowed
    assert client.post("/settings/email/", good).status_code == 429
    page = client.post("/settings/email/", {**good, "address": "bo@"})
    assert page.status_code == 400
    assert "Not a valid email address" in page.content.decode()


# --- fields kept after a failed test ---------------------------------------------------


def test_after_a_refused_password_the_personal_form_keeps_every_field(
    client, member, connect_payload
):
    # Given Dovecot refuses the password Bo typed
    client.force_login(member)
    payload = connect_payload("bo@acme.example.com")
    payload["imap"]["password"] = "not-his-password"
    form = _form(payload, backfill_days="30")
    # When he connects
    page = client.post("/settings/email/", form)
    # Then it fails, and every field is as he typed it, passwords included
    body = page.content.decode()
    assert page.status_code == 422
    for name in ("address", "imap_host", "imap_port", "imap_username", "imap_password",
                 "smtp_host", "smtp_port", "smtp_username", "smtp_password"):  # fmt: skip
        assert _value_of(body, name) == str(form[name]), name
    assert _selected(body, "imap_security") == form["imap_security"]
    assert _selected(body, "smtp_security") == form["smtp_security"]
    assert _selected(body, "backfill_days") == "30"
    assert not Mailbox.objects.exists()
    # And the password was only echoed in that response: the next page has none of it
    assert "not-his-password" not in client.get("/settings/email/").content.decode()


def test_after_a_refused_password_the_team_form_keeps_every_field_and_the_tick(
    client, admin, connect_payload
):
    inbox = Inbox.objects.create(account=admin.account, name="Support")
    client.force_login(admin)
    payload = connect_payload("support@acme.example.com", kind="team")
    payload["imap"]["password"] = "not-the-password"
    form = _form(payload, acknowledge_team_visibility="on")
    page = client.post(f"/settings/inboxes/{inbox.pk}/connect/", form)
    body = page.content.decode()
    assert page.status_code == 422
    card = body[body.index(f'id="connect-team-{inbox.pk}"') :]
    for name in ("address", "imap_host", "imap_port", "imap_password", "smtp_password"):
        assert _value_of(card, name) == str(form[name]), name
    assert re.search(r'name="acknowledge_team_visibility"[^>]*required checked', card)
    assert not Mailbox.objects.exists()


def test_the_visibility_tick_is_required_in_the_browser(client, admin):
    Inbox.objects.create(account=admin.account, name="Support")
    client.force_login(admin)
    body = client.get("/settings/inboxes/").content.decode()
    ticks = re.findall(r'<input type="checkbox" name="acknowledge_team_visibility"[^>]*>', body)
    assert ticks
    assert all(" required" in tick for tick in ticks)
    assert not any(" checked" in tick for tick in ticks)


# --- sign-in buttons -------------------------------------------------------------------


@pytest.fixture
def no_oauth(settings):
    for name in ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"):
        setattr(settings, name, "")
    for name in ("MICROSOFT_CLIENT_ID", "MICROSOFT_CLIENT_SECRET"):
        setattr(settings, name, "")


@pytest.fixture
def oauth_configured(settings):
    settings.GOOGLE_CLIENT_ID = "google-id"
    settings.GOOGLE_CLIENT_SECRET = "google-secret"
    settings.MICROSOFT_CLIENT_ID = "ms-id"
    settings.MICROSOFT_CLIENT_SECRET = "ms-secret"


def _buttons(body: str) -> list[str]:
    return re.findall(r"<button[^>]*>Connect (?:Gmail|Microsoft 365)</button>", body)


def test_a_member_sees_disabled_sign_in_buttons_asking_the_admin(client, member, no_oauth):
    client.force_login(member)
    body = client.get("/settings/email/").content.decode()
    buttons = _buttons(body)
    assert len(buttons) == 2 and all(" disabled" in b for b in buttons)
    assert body.count("Not available on this server: ask your admin.") == 2
    assert "GOOGLE_CLIENT_ID" not in body and "MICROSOFT_CLIENT_SECRET" not in body


def test_an_admin_sees_which_variables_to_set(client, admin, no_oauth):
    client.force_login(admin)
    body = client.get("/settings/email/").content.decode()
    assert all(" disabled" in b for b in _buttons(body))
    assert "set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET" in body
    assert "set MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET" in body
    assert "ask your admin" not in body


def test_only_the_missing_variable_is_named(client, admin, no_oauth, settings):
    settings.GOOGLE_CLIENT_ID = "google-id"
    client.force_login(admin)
    body = client.get("/settings/email/").content.decode()
    assert "set GOOGLE_CLIENT_SECRET in the server" in body


def test_configured_providers_are_enabled_buttons_before_the_imap_form(
    client, member, admin, oauth_configured
):
    client.force_login(member)
    body = client.get("/settings/email/").content.decode()
    buttons = _buttons(body)
    assert len(buttons) == 2 and not any(" disabled" in b for b in buttons)
    assert "Not available on this server" not in body
    assert body.index("Connect Gmail") < body.index('id="connect-personal"')
    assert body.index("Connect Microsoft 365") < body.index('id="connect-personal"')
    # And on an inbox's team-email form, for the admin, first too
    inbox = Inbox.objects.create(account=admin.account, name="Support")
    client.force_login(admin)
    body = client.get("/settings/inboxes/").content.decode()
    assert f'id="connect-gmail-{inbox.pk}"' in body
    assert body.index(f'id="connect-gmail-{inbox.pk}"') < body.index(
        f'id="connect-team-{inbox.pk}"'
    )


def test_the_team_form_shows_disabled_buttons_with_the_variables_to_admins(client, admin, no_oauth):
    inbox = Inbox.objects.create(account=admin.account, name="Support")
    client.force_login(admin)
    body = client.get("/settings/inboxes/").content.decode()
    assert f'id="connect-gmail-unavailable-{inbox.pk}"' in body
    assert "set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET" in body


def test_the_sign_in_buttons_team_form_requires_the_tick_too(client, admin, oauth_configured):
    inbox = Inbox.objects.create(account=admin.account, name="Support")
    client.force_login(admin)
    body = client.get("/settings/inboxes/").content.decode()
    oauth_forms = re.findall(r'<form method="get" action="/connect/\w+/".*?</form>', body, re.S)
    assert len(oauth_forms) == 2
    for form in oauth_forms:
        assert f'value="{inbox.pk}"' in form
        assert re.search(r'name="acknowledge_team_visibility" value="on" required>', form)


@pytest.mark.parametrize("address", ["", "   ", "bo", "@gmail.com", "bo@", "bo@@x", "x" * 400])
def test_an_address_that_is_not_one_yet_pre_fills_nothing(client, member, address):
    client.force_login(member)
    response = client.get("/settings/email/servers/", {"address": address})
    assert response.status_code == 200
    assert response.json()["found"] is False
    assert response.json()["note"]
