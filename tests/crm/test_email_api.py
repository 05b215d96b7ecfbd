"""POST /contacts/{id}/emails/, GET /emails/{id}/ and GET, PUT /me/preferences/."""

from __future__ import annotations

import email as email_lib
from email import policy

import pytest

from crm.models import Email, Preferences, TimelineEvent, TrackedLink
from inboxes.models import Mailbox, OutboxItem
from tests.crm.send_support import dana, personal_mailbox, queue

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(member):
    return dana(member.account), personal_mailbox(member)


def post_email(api, contact, **body):
    return api.post(f"/api/v1/contacts/{contact.pk}/emails/", body, format="json")


def sent_mime(email_id):
    item = OutboxItem.objects.get(message__crm_emails__id=email_id)
    with item.message.raw.open("rb") as raw:
        return email_lib.message_from_bytes(raw.read(), policy=policy.default)


def test_sending_answers_201_with_the_email_and_omitted_toggles_take_the_preferences(
    member_api, member, setup
):
    contact, mailbox = setup
    Preferences.objects.create(user=member, track_opens=False, track_clicks=True)

    response = post_email(
        member_api,
        contact,
        mailbox=str(mailbox.pk),
        subject="Our proposal",
        html='<p>See <a href="https://acme.example.com/offer">it</a></p>',
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["contact"] == str(contact.pk) and body["mailbox"] == str(mailbox.pk)
    assert body["direction"] == "outbound" and body["subject"] == "Our proposal"
    assert body["to"] == [{"name": "Dana Prospect", "address": "dana@prospect.example.com"}]
    assert body["from"]["address"] == member.email
    assert body["delivery"]["state"] == "queued" and body["delivery"]["scheduled_for"] is None
    assert body["tracking"] == {"opens": 0, "clicks": 0, "machine_opens": 0}
    assert body["logged"] is True
    email = Email.objects.get(pk=body["id"])
    assert (email.track_opens, email.track_clicks) == (False, True)
    assert TrackedLink.objects.get(email=email).url == "https://acme.example.com/offer"
    mime = sent_mime(email.pk)
    assert "/t/o/" not in mime.get_body(("html",)).get_content()
    assert mime.get_body(("plain",)).get_content().startswith("See it (https://acme.example.com")
    assert Preferences.objects.get(user=member).last_mailbox == mailbox

    assert member_api.get(f"/api/v1/emails/{email.pk}/").json() == body


def test_explicit_toggles_win_and_log_off_keeps_it_off_the_timeline(member_api, setup):
    contact, mailbox = setup
    response = post_email(
        member_api,
        contact,
        mailbox=str(mailbox.pk),
        subject="Quiet",
        text="Just between us.",
        log=False,
        track_opens=True,
        track_clicks=False,
    )
    assert response.status_code == 201
    email = Email.objects.get(pk=response.json()["id"])
    assert (email.logged, email.track_opens, email.track_clicks) == (False, True, False)
    assert not TimelineEvent.objects.filter(contact=contact).exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"subject": "Hi", "text": "x"}, "mailbox"),
        ({"mailbox": "MAILBOX", "text": "x"}, "subject"),
        ({"mailbox": "MAILBOX", "subject": "Hi"}, "text"),
        ({"mailbox": "MAILBOX", "subject": "Hi", "text": " ", "html": ""}, "text"),
        ({"mailbox": "not-a-uuid", "subject": "Hi", "text": "x"}, "mailbox"),
    ],
)
def test_missing_fields_are_invalid_and_nothing_is_queued(member_api, setup, body, field):
    contact, mailbox = setup
    body = {k: (str(mailbox.pk) if v == "MAILBOX" else v) for k, v in body.items()}
    response = post_email(member_api, contact, **body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and field in response.json()["errors"]
    assert not Email.objects.exists() and not OutboxItem.objects.exists()


def test_a_team_mailbox_is_invalid(admin_api, admin, setup):
    contact, _ = setup
    team = Mailbox.objects.create(
        account=admin.account,
        kind="team",
        address="sales@acme.example.com",
        canonical_address="sales@acme.example.com",
        status="connected",
    )
    response = post_email(admin_api, contact, mailbox=str(team.pk), subject="Hi", text="x")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert "mailbox" in response.json()["errors"]
    assert not Email.objects.exists()


def test_someone_elses_mailbox_and_another_accounts_contact_are_404(
    admin_api, outsider_api, outsider, setup
):
    contact, members_mailbox = setup
    response = post_email(
        admin_api, contact, mailbox=str(members_mailbox.pk), subject="Hi", text="x"
    )
    assert response.status_code == 404 and response.json()["code"] == "not_found"

    outsiders_mailbox = personal_mailbox(outsider)
    response = post_email(
        outsider_api, contact, mailbox=str(outsiders_mailbox.pk), subject="Hi", text="x"
    )
    assert response.status_code == 404
    assert not Email.objects.exists()


def test_an_email_is_read_by_its_sender_and_by_the_account_only_when_logged(
    member, member_api, admin_api, outsider_api, setup
):
    contact, mailbox = setup
    logged = queue(member, contact, mailbox)
    private = queue(member, contact, mailbox, log=False)

    assert member_api.get(f"/api/v1/emails/{private.pk}/").status_code == 200
    assert admin_api.get(f"/api/v1/emails/{logged.pk}/").status_code == 200
    assert admin_api.get(f"/api/v1/emails/{private.pk}/").status_code == 404
    assert outsider_api.get(f"/api/v1/emails/{logged.pk}/").status_code == 404


# --- Preferences ---------------------------------------------------------------------------------


def test_preferences_start_with_the_defaults(member_api):
    assert member_api.get("/api/v1/me/preferences/").json() == {
        "log_sent_email": True,
        "track_opens": True,
        "track_clicks": True,
        "never_log": [],
        "font": {"family": "Arial", "size": 14},
    }


def test_preferences_are_saved_with_never_log_entries_canonical(member_api, member):
    response = member_api.put(
        "/api/v1/me/preferences/",
        {
            "log_sent_email": False,
            "track_opens": False,
            "never_log": [
                " Ann.Lee+crm@GoogleMail.com ",
                "@Bücher.Example",
                "",
                "@x.com",
                "@X.COM",
            ],
            "font": {"family": "Georgia", "size": 16},
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "log_sent_email": False,
        "track_opens": False,
        "track_clicks": True,
        "never_log": ["annlee@gmail.com", "@xn--bcher-kva.example", "@x.com"],
        "font": {"family": "Georgia", "size": 16},
    }
    assert member_api.get("/api/v1/me/preferences/").json() == response.json()


@pytest.mark.parametrize(
    "body, errors",
    [
        ({"never_log": ["ann@", "@", "@-bad-.com", "ok@x.com"]}, "never_log"),
        ({"font": {"family": "Arial", "size": 7}}, "font"),
        ({"font": {"family": "Arial", "size": 33}}, "font"),
        ({"font": {"family": "x'; } body { color: red", "size": 14}}, "font"),
        ({"font": {"family": "Arial"}}, "font"),
        ({"track_opens": "maybe"}, "track_opens"),
        ({"never_log": "ann@x.com"}, "never_log"),
    ],
)
def test_invalid_preferences_are_400_with_field_errors_and_change_nothing(member_api, body, errors):
    before = member_api.get("/api/v1/me/preferences/").json()
    response = member_api.put("/api/v1/me/preferences/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and errors in response.json()["errors"]
    assert member_api.get("/api/v1/me/preferences/").json() == before


def test_never_log_errors_name_each_bad_entry(member_api):
    response = member_api.put(
        "/api/v1/me/preferences/", {"never_log": ["ann@", "fine@x.com", "@@x"]}, format="json"
    )
    problems = response.json()["errors"]["never_log"]
    assert len(problems) == 2 and "'ann@'" in problems[0] and "'@@x'" in problems[1]


def test_the_default_font_is_applied_to_the_next_email(member_api, member, setup):
    contact, mailbox = setup
    member_api.put(
        "/api/v1/me/preferences/", {"font": {"family": "Courier New", "size": 18}}, format="json"
    )
    response = post_email(member_api, contact, mailbox=str(mailbox.pk), subject="Hi", text="x")
    html = sent_mime(response.json()["id"]).get_body(("html",)).get_content()
    assert "font-family: 'Courier New', Courier, monospace; font-size: 18px" in html


def test_a_never_logged_contact_is_not_logged_unless_asked(member_api, member, setup):
    contact, mailbox = setup
    member_api.put(
        "/api/v1/me/preferences/", {"never_log": ["@prospect.example.com"]}, format="json"
    )
    first = post_email(member_api, contact, mailbox=str(mailbox.pk), subject="Hi", text="x")
    second = post_email(
        member_api, contact, mailbox=str(mailbox.pk), subject="Hi", text="x", log=True
    )
    assert first.json()["logged"] is False and second.json()["logged"] is True


def test_the_api_shows_the_html_without_the_open_pixel(member_api, member, setup):
    contact, mailbox = setup
    response = post_email(
        member_api, contact, mailbox=str(mailbox.pk), subject="Hi", text="x", track_opens=True
    )
    email = Email.objects.get(pk=response.json()["id"])
    assert "/t/o/" in email.message.html  # it went out with the pixel
    assert "/t/o/" not in response.json()["html"] and "<img" not in response.json()["html"]
    assert "font-family" in response.json()["html"]
