"""Tracking end to end through the endpoints: valid, forged, altered and replayed
tokens; the sender's own opens; machines counted apart with their reason."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache

from crm.models import Email, TimelineEvent, TrackedLink, TrackingEvent
from crm.tracking import click_token, open_token
from crm.tracking_events import DEDUPE_SECONDS
from crm.tracking_views import PIXEL
from tests.crm.send_support import (
    HUMAN_AGENT,
    HUMAN_IP,
    dana,
    mark_sent,
    personal_mailbox,
    queue,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(member):
    contact = dana(member.account)
    email = queue(
        member,
        contact,
        personal_mailbox(member),
        html='<p>See <a href="https://acme.example.com/offer">the offer</a> and '
        '<a href="https://acme.example.com/terms">terms</a>.</p>',
        text="",
        track_opens=True,
        track_clicks=True,
    )
    mark_sent(email)
    return email


def fetch_open(client, token, ip=HUMAN_IP, agent=HUMAN_AGENT):
    return client.get(f"/t/o/{token}", REMOTE_ADDR=ip, HTTP_USER_AGENT=agent)


def fetch_click(client, token, ip=HUMAN_IP, agent=HUMAN_AGENT):
    return client.get(f"/t/c/{token}", REMOTE_ADDR=ip, HTTP_USER_AGENT=agent)


def counts(email):
    email.refresh_from_db()
    return email.opens, email.clicks, email.machine_opens


def timeline_types(email):
    return list(
        TimelineEvent.objects.filter(email=email)
        .order_by("at", "id")
        .values_list("type", flat=True)
    )


def test_an_open_answers_the_pixel_uncached_and_counts_once_on_the_timeline(client, sent):
    response = fetch_open(client, open_token(sent.pk))

    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    assert response.content == PIXEL
    assert "no-store" in response["Cache-Control"]
    assert counts(sent) == (1, 0, 0)
    [event] = TrackingEvent.objects.filter(email=sent)
    assert (event.kind, event.machine, event.ip, event.user_agent) == (
        "open",
        False,
        HUMAN_IP,
        HUMAN_AGENT,
    )
    assert timeline_types(sent) == ["email", "open"]
    opened = TimelineEvent.objects.get(email=sent, type="open")
    assert opened.at == event.created_at or abs((opened.at - event.created_at).total_seconds()) < 1
    assert opened.detail == {"machine": False, "reason": ""}


def test_a_click_redirects_to_its_own_link_and_counts(client, sent):
    response = fetch_click(client, click_token(sent.pk, 1))

    assert response.status_code == 302
    assert response["Location"] == "https://acme.example.com/terms"
    assert "no-store" in response["Cache-Control"]
    assert response["Referrer-Policy"] == "no-referrer"
    assert counts(sent) == (0, 1, 0)
    click = TimelineEvent.objects.get(email=sent, type="click")
    assert click.detail["url"] == "https://acme.example.com/terms"
    assert TrackingEvent.objects.get(email=sent).link == TrackedLink.objects.get(
        email=sent, position=1
    )


def test_forged_and_altered_click_tokens_are_404_and_count_nothing(client, sent):
    token = click_token(sent.pk, 0)
    value, signature = token.rsplit(".", 1)
    altered_position = value[:-1] + "1." + signature
    altered_signature = token[:-1] + ("A" if token[-1] != "A" else "B")
    forged = "c" + "A" * 22 + "0." + "x" * 43
    open_as_click = open_token(sent.pk)
    missing_link = click_token(sent.pk, 7)

    for bad in (altered_position, altered_signature, forged, open_as_click, missing_link):
        response = fetch_click(client, bad)
        assert response.status_code == 404, bad
        assert not response.has_header("Location")

    assert counts(sent) == (0, 0, 0)
    assert not TrackingEvent.objects.exists()
    assert timeline_types(sent) == ["email"]


def test_a_forged_open_token_still_gets_the_pixel_and_counts_nothing(client, sent):
    for bad in (open_token(sent.pk)[:-3] + "abc", "o" + "B" * 22 + ".zzz", "nonsense"):
        response = fetch_open(client, bad)
        assert response.status_code == 200 and response.content == PIXEL
    assert counts(sent) == (0, 0, 0) and not TrackingEvent.objects.exists()


def test_a_replayed_token_counts_again_but_not_a_double_fetch_within_seconds(client, sent):
    token = open_token(sent.pk)
    fetch_open(client, token)
    fetch_open(client, token)  # the same client at once: a double fetch, counted once
    assert counts(sent) == (1, 0, 0)

    # Replayed later (the dedupe window has passed): the email was opened again.
    cache.clear()
    fetch_open(client, token)
    assert counts(sent) == (2, 0, 0)
    # From another client at once: another reader, counted.
    fetch_open(client, token, ip="198.51.100.20")
    assert counts(sent) == (3, 0, 0)
    assert timeline_types(sent) == ["email", "open", "open", "open"]


def test_the_double_fetch_window_is_a_few_seconds(client, sent):
    token = click_token(sent.pk, 0)
    fetch_click(client, token)
    time.sleep(DEDUPE_SECONDS + 0.5)
    fetch_click(client, token)
    assert counts(sent) == (0, 2, 0)


def test_the_senders_own_opens_and_clicks_do_not_count(client, sent, member):
    client.force_login(member)
    assert fetch_open(client, open_token(sent.pk)).status_code == 200
    response = fetch_click(client, click_token(sent.pk, 0))
    assert response.status_code == 302  # still goes where the link pointed
    assert counts(sent) == (0, 0, 0)
    assert not TrackingEvent.objects.exists()


def test_a_teammate_reading_it_in_the_app_is_no_open_but_someone_elses_user_is(
    client, sent, admin, outsider
):
    client.force_login(admin)  # the app shows the email on the contact's timeline
    fetch_open(client, open_token(sent.pk))
    assert counts(sent) == (0, 0, 0)

    client.force_login(outsider)  # signed in to another account: not the app showing it
    fetch_open(client, open_token(sent.pk))
    assert counts(sent) == (1, 0, 0)


@pytest.mark.parametrize(
    "agent, reason",
    [
        ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
         "Gmail's image proxy"),
        ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
         "Yahoo Mail's image proxy"),
        ("Microsoft Office Existence Discovery", "Microsoft Office's link check"),
        ("", "no user agent"),
    ],
)  # fmt: skip
def test_an_image_proxy_is_a_machine_open_with_its_reason(client, sent, agent, reason):
    fetch_open(client, open_token(sent.pk), agent=agent)

    assert counts(sent) == (0, 0, 1)
    event = TrackingEvent.objects.get(email=sent)
    assert event.machine and event.reason == reason
    assert timeline_types(sent) == ["email"]  # machines stay off the timeline


def test_a_fetch_within_seconds_of_the_send_is_a_link_scanner(client, sent):
    mark_sent(sent, seconds_ago=2)
    fetch_open(client, open_token(sent.pk))
    fetch_click(client, click_token(sent.pk, 0))

    assert counts(sent) == (0, 0, 1)  # a scanner's click counts nowhere
    reasons = set(TrackingEvent.objects.filter(email=sent).values_list("reason", flat=True))
    assert len(reasons) == 1 and "after the send (a link scanner)" in reasons.pop()
    assert timeline_types(sent) == ["email"]


def test_a_fetch_before_the_email_left_is_a_machine(client, member):
    email = queue(member, dana(member.account), personal_mailbox(member), track_opens=True)
    fetch_open(client, open_token(email.pk))
    assert counts(email) == (0, 0, 1)
    assert TrackingEvent.objects.get(email=email).reason == "fetched before the email was sent"


def test_a_fetch_from_the_sending_servers_network_is_a_machine(client, sent):
    # The mailbox's SMTP host is 127.0.0.1.
    fetch_open(client, open_token(sent.pk), ip="127.0.0.1")
    assert counts(sent) == (0, 0, 1)
    assert TrackingEvent.objects.get(email=sent).reason == "from the sending server's network"


def test_the_client_address_is_read_where_the_deployment_says(client, sent, settings):
    settings.RATELIMIT_IP_META_KEY = "HTTP_X_REAL_IP"
    client.get(
        f"/t/o/{open_token(sent.pk)}",
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_REAL_IP="198.51.100.9",
        HTTP_USER_AGENT=HUMAN_AGENT,
    )
    assert TrackingEvent.objects.get(email=sent).ip == "198.51.100.9"


def test_opens_of_an_unlogged_email_count_but_stay_off_the_timeline(client, member):
    email = queue(member, dana(member.account), personal_mailbox(member), log=False,
                  track_opens=True)  # fmt: skip
    mark_sent(email)
    fetch_open(client, open_token(email.pk))
    assert counts(email) == (1, 0, 0)
    assert not TimelineEvent.objects.filter(contact=email.contact).exists()


def test_an_email_without_tracking_has_no_pixel_and_no_links(member):
    email = queue(member, dana(member.account), personal_mailbox(member), track_opens=False,
                  track_clicks=False)  # fmt: skip
    assert "/t/o/" not in email.message.html and "/t/c/" not in email.message.html
    assert "https://acme.example.com/p/42" in email.message.html
    assert not TrackedLink.objects.filter(email=email).exists()
    assert Email.objects.get(pk=email.pk).track_opens is False


def test_a_head_request_is_answered_but_never_counted(client, sent):
    assert client.head(f"/t/o/{open_token(sent.pk)}").status_code == 200
    response = client.head(f"/t/c/{click_token(sent.pk, 0)}")
    assert response.status_code == 302
    assert response["Location"] == "https://acme.example.com/offer"
    token = click_token(sent.pk, 0)
    altered = token[:-1] + ("x" if token[-1] != "x" else "y")
    assert client.head(f"/t/c/{altered}").status_code == 404
    assert client.post(f"/t/o/{open_token(sent.pk)}").status_code == 405
    assert counts(sent) == (0, 0, 0) and not TrackingEvent.objects.exists()
