"""End to end: an admin invites a user, the invitation goes out through the operator's
outgoing mail (EMAIL_URL, here aiosmtpd), the user follows the link, sets a password
and logs in with it."""

import email as email_lib
import re
from email import policy

import dj_email_url
import pytest

from accounts.models import User

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "lantern over the quiet harbour"


def test_an_invited_user_gets_the_email_follows_the_link_sets_a_password_and_logs_in(
    client, admin, smtp_server, settings
):
    # Given the product's own mail goes to an SMTP server (EMAIL_URL)
    parsed = dj_email_url.parse(f"smtp://{smtp_server.host}:{smtp_server.port}")
    for key in ("EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_USE_TLS", "EMAIL_USE_SSL"):
        setattr(settings, key, parsed[key])
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "postkamer@ops.example.com"
    settings.PUBLIC_URL = "https://postkamer.example.com"
    smtp_server.clear()

    # When Ann invites Dee on Settings > Users
    client.force_login(admin)
    response = client.post(
        "/settings/users/invite/",
        {"email": "dee@acme.example.com", "full_name": "Dee Park", "role": "member"},
    )
    assert response.status_code == 302
    client.logout()

    # Then Dee's invitation arrives through the SMTP server
    [received] = smtp_server.wait_for_messages(1)
    assert received.rcpt_tos == ("dee@acme.example.com",)
    message = email_lib.message_from_bytes(received.data, policy=policy.default)
    assert message["From"] == "postkamer@ops.example.com"
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_body(("plain",)).get_content()
    [link] = re.findall(r"https://postkamer\.example\.com(/invite/\S+/)", body)

    # When she follows the link and chooses a password
    page = client.get(link)
    assert page.status_code == 200 and "Welcome, Dee Park" in page.content.decode()
    response = client.post(link, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302
    client.logout()

    # Then she logs in with it through the login form
    response = client.post(
        "/login/", {"username": "dee@acme.example.com", "password": NEW_PASSWORD}
    )
    assert response.status_code == 302 and response["Location"] == "/settings/email/"
    page = client.get("/settings/email/")
    assert page.status_code == 200 and "Dee Park · Acme" in page.content.decode()
    assert User.objects.get(email="dee@acme.example.com").last_login is not None
