"""Admin tools on Settings > Users: invite by email, rename, change a role, send a
password reset; and users resetting their own password, without telling who has a login."""

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts import invites
from accounts.models import Role, User
from audit.models import AuditEvent
from tests.support.factories import PASSWORD

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "plum tree on a windy hill"


def _without_csrf(response) -> str:
    return re.sub(r'"X-CSRFToken": "[^"]*"', "", response.content.decode())


def _path(message) -> str:
    [url] = re.findall(r"https?://\S+", message.body)
    return "/" + url.split("/", 3)[3]


def test_an_admin_invites_a_user_who_gets_a_link_that_sets_a_password_once(client, admin):
    client.force_login(admin)
    response = client.post(
        "/settings/users/invite/",
        {"email": "Dee@Acme.example.com", "full_name": "Dee Park", "role": "member"},
    )
    assert response.status_code == 302
    dee = User.objects.get(email="dee@acme.example.com")
    assert not dee.has_usable_password()
    [sent] = mail.outbox
    assert sent.to == ["dee@acme.example.com"]
    assert sent.subject == "Ann Smith invites you to Acme on Postkamer"
    assert sent.extra_headers["Auto-Submitted"] == "auto-generated"
    assert AuditEvent.objects.filter(action="user.invited", target_id=str(dee.pk)).exists()

    link = _path(sent)
    client.logout()
    assert client.get(link).status_code == 200
    response = client.post(link, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/settings/email/"
    dee.refresh_from_db()
    assert dee.check_password(NEW_PASSWORD)
    assert client.get("/settings/email/").status_code == 200  # logged in as Dee

    # The same link again: refused, and the password stays
    client.logout()
    response = client.get(link)
    assert response.status_code == 400
    assert "doesn't work any more" in response.content.decode()
    response = client.post(
        link, {"new_password1": "another pass 123", "new_password2": "another pass 123"}
    )
    assert response.status_code == 400
    dee.refresh_from_db()
    assert dee.check_password(NEW_PASSWORD)


def test_an_invitation_expires(admin, settings):
    settings.INVITE_MAX_AGE = 3600
    dee = User.objects.create_user(email="dee@acme.example.com", account=admin.account)
    made = timezone.now()
    token = invites.invite_token_make(dee, now=made)
    assert invites.invite_token_check(dee, token, now=made + timedelta(seconds=3600))
    assert not invites.invite_token_check(dee, token, now=made + timedelta(seconds=3601))
    assert not invites.invite_token_check(dee, token + "0", now=made)
    assert not invites.invite_token_check(dee, "junk", now=made)


def test_an_expired_invitation_link_is_refused_on_the_page(client, admin, settings):
    settings.INVITE_MAX_AGE = 3600
    dee = User.objects.create_user(email="dee@acme.example.com", account=admin.account)
    path = invites.invite_link(dee, now=timezone.now() - timedelta(hours=2)).split("/", 3)[3]
    response = client.post(
        "/" + path, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert response.status_code == 400
    dee.refresh_from_db()
    assert not dee.has_usable_password()


def test_the_admin_typing_a_password_stays_possible(client, admin):
    client.force_login(admin)
    response = client.post(
        "/settings/users/new/",
        {
            "email": "eve@acme.example.com",
            "full_name": "Eve",
            "role": "member",
            "password": PASSWORD,
        },
    )
    assert response.status_code == 302
    assert User.objects.get(email="eve@acme.example.com").check_password(PASSWORD)
    assert mail.outbox == []


def test_a_member_cannot_invite_rename_or_reset(client, member, other_member):
    client.force_login(member)
    before = (other_member.full_name, other_member.role)
    assert (
        client.post(
            "/settings/users/invite/", {"email": "x@acme.example.com", "role": "admin"}
        ).status_code
        == 403
    )
    assert (
        client.post(
            f"/settings/users/{other_member.pk}/edit/", {"full_name": "X", "role": "admin"}
        ).status_code
        == 403
    )
    assert client.post(f"/settings/users/{other_member.pk}/password-reset/").status_code == 403
    other_member.refresh_from_db()
    assert (other_member.full_name, other_member.role) == before
    assert not User.objects.filter(email="x@acme.example.com").exists()
    assert mail.outbox == []


def test_rename_and_role_change_are_audited_with_before_and_after(client, admin, member):
    client.force_login(admin)
    response = client.post(
        f"/settings/users/{member.pk}/edit/", {"full_name": "Bo Lee-Park", "role": "admin"}
    )
    assert response.status_code == 302
    member.refresh_from_db()
    assert (member.full_name, member.role) == ("Bo Lee-Park", Role.ADMIN)
    renamed = AuditEvent.objects.get(action="user.renamed")
    assert renamed.data["changes"] == {"full_name": {"before": "Bo Lee", "after": "Bo Lee-Park"}}
    role = AuditEvent.objects.get(action="user.role_changed")
    assert role.data["changes"] == {"role": {"before": "member", "after": "admin"}}
    assert role.actor == admin and role.target_repr == member.email

    page = client.get("/settings/audit/").content.decode()
    assert "full_name: Bo Lee → Bo Lee-Park" in page
    assert "role: member → admin" in page


def test_an_admin_cannot_change_her_own_role_and_nothing_changes(client, admin):
    client.force_login(admin)
    response = client.post(
        f"/settings/users/{admin.pk}/edit/", {"full_name": "Ann", "role": "member"}
    )
    assert response.status_code == 400
    assert "You cannot change your own role" in response.content.decode()
    admin.refresh_from_db()
    assert (admin.full_name, admin.role) == ("Ann Smith", Role.ADMIN)
    assert not AuditEvent.objects.filter(action__in=["user.renamed", "user.role_changed"]).exists()


def test_an_admin_sends_a_password_reset_and_the_link_sets_a_new_password(client, admin, member):
    client.force_login(admin)
    assert client.post(f"/settings/users/{member.pk}/password-reset/").status_code == 302
    [sent] = mail.outbox
    assert sent.to == [member.email]
    assert AuditEvent.objects.filter(
        action="user.password_reset_sent", target_id=str(member.pk)
    ).exists()
    client.logout()
    link = _path(sent)
    response = client.get(link, follow=True)  # Django swaps the token for a session key
    assert response.status_code == 200 and b"Choose a new password" in response.content
    set_url = response.redirect_chain[-1][0]
    response = client.post(set_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert response.status_code == 302
    member.refresh_from_db()
    assert member.check_password(NEW_PASSWORD)
    # Used once: the link no longer works
    response = client.get(link, follow=True)
    assert b"doesn't work any more" in response.content


def test_forgot_password_answers_the_same_whether_or_not_the_address_has_a_login(client, member):
    known = client.post("/password-reset/", {"email": "BO@acme.example.com"})
    unknown = client.post("/password-reset/", {"email": "nobody@acme.example.com"})
    assert known.status_code == unknown.status_code == 302
    assert known["Location"] == unknown["Location"] == "/password-reset/sent/"
    assert _without_csrf(client.get(known["Location"])) == _without_csrf(
        client.get(unknown["Location"])
    )
    [sent] = mail.outbox
    assert sent.to == [member.email]
    assert "/password-reset/" in sent.body


def test_forgot_password_mails_nothing_to_a_deactivated_user(client, member):
    member.is_active = False
    member.save()
    response = client.post("/password-reset/", {"email": member.email})
    assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"
    assert mail.outbox == []


def test_the_login_page_offers_forgot_password(client):
    page = client.get("/login/").content.decode()
    assert 'href="/password-reset/"' in page and "Forgot password?" in page


def test_the_users_api_still_requires_a_password_as_the_contract_says(admin_api):
    response = admin_api.post(
        "/api/v1/users/", {"email": "fay@acme.example.com", "role": "member"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and "password" in response.json()["errors"]


def _mail_server_down(settings, free_tcp_port) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_tcp_port  # nothing listens
    settings.EMAIL_TIMEOUT = 5


def test_an_invitation_the_mail_server_refuses_says_so_and_can_be_sent_again(
    client, admin, settings, free_tcp_port
):
    _mail_server_down(settings, free_tcp_port)
    client.force_login(admin)
    response = client.post(
        "/settings/users/invite/", {"email": "dee@acme.example.com", "role": "member"}, follow=True
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "could not be sent" in page and "The user is added." in page
    dee = User.objects.get(email="dee@acme.example.com")
    edit = client.get(f"/settings/users/{dee.pk}/edit/").content.decode()
    assert "Send the invitation again" in edit


def test_forgot_password_reads_the_same_when_the_mail_server_is_down(
    client, member, settings, free_tcp_port
):
    _mail_server_down(settings, free_tcp_port)
    response = client.post("/password-reset/", {"email": member.email})
    assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"


def test_forgot_password_mails_one_address_a_few_times_an_hour_at_most(client, member, settings):
    settings.RESET_MAILS_PER_HOUR = 3
    for _ in range(5):
        response = client.post("/password-reset/", {"email": member.email})
        assert response["Location"] == "/password-reset/sent/"
    assert len(mail.outbox) == 3
