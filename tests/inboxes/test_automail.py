"""No loops: the guard for automatic mail (inboxes/automail.py), and the
Auto-Submitted mark on what the product sends on its own."""

from __future__ import annotations

from email import message_from_bytes

import pytest
from django.core import mail

from core.mail import product_mail_send
from inboxes.automail import automatic_send_refusal, may_send_automatically
from inboxes.mime import parse_message
from inboxes.models import Mailbox, Message
from inboxes.outbox.compose import Recipient, build_mime

pytestmark = pytest.mark.django_db


@pytest.fixture
def team_address(account):
    return Mailbox.objects.create(
        account=account,
        kind="team",
        address="Support@Acme.example.com",
        canonical_address="support@acme.example.com",
    )


def message(account, kind: str) -> Message:
    return Message.objects.create(
        account=account, dedupe_key=kind, kind=kind, from_address="ann@x.example"
    )


def test_a_customer_may_get_automatic_mail(account, team_address):
    assert may_send_automatically(account, "ann@x.example")
    assert may_send_automatically(account, "ann@x.example", in_answer_to=message(account, "email"))


@pytest.mark.parametrize(
    "address",
    [
        "noreply@shop.example",
        "no-reply@shop.example",
        "No_Reply+orders@shop.example",
        "donotreply@shop.example",
        "do-not-reply@shop.example",
        "MAILER-DAEMON@mx.example",
        "postmaster@x.example",
        "bounces@lists.example",
        "noreply-notifications@github.example",
    ],
)
def test_addresses_nobody_reads_never_get_automatic_mail(account, address):
    assert automatic_send_refusal(account, address) == "nobody reads that address"


def test_people_whose_names_only_start_like_noreply_still_get_mail(account):
    assert may_send_automatically(account, "nora@x.example")
    assert may_send_automatically(account, "postmasters-guild@x.example") is True


def test_no_automatic_answer_to_a_bounce_or_an_auto_reply(account):
    assert automatic_send_refusal(
        account, "ann@x.example", in_answer_to=message(account, "bounce")
    ) == ("it would answer a delivery report")
    assert automatic_send_refusal(
        account, "ann@x.example", in_answer_to=message(account, "auto_reply")
    ) == ("it would answer an automatic reply")


def test_the_accounts_own_connected_addresses_never_get_automatic_mail(
    account, outsider, team_address
):
    assert not may_send_automatically(account, "support@ACME.example.com")
    # Another account's, or a disconnected one, is just an address.
    assert may_send_automatically(outsider.account, "support@acme.example.com")
    Mailbox.objects.filter(pk=team_address.pk).update(status="disconnected")
    assert may_send_automatically(account, "support@acme.example.com")


def test_an_invalid_address_is_refused(account):
    assert automatic_send_refusal(account, "not an address") == "the address is not valid"


def test_automatic_outbox_mail_is_marked_auto_submitted_and_a_persons_is_not():
    def compose(automatic: bool) -> bytes:
        raw, _ = build_mime(
            from_address="support@acme.example.com",
            from_name="Acme",
            to=[Recipient("ann@x.example")],
            cc=[],
            subject="Your booking",
            text="See you Monday.",
            automatic=automatic,
        )
        return raw

    assert message_from_bytes(compose(True))["Auto-Submitted"] == "auto-generated"
    assert message_from_bytes(compose(False))["Auto-Submitted"] is None
    # What the product marks, the product reads as automatic too.
    assert parse_message(compose(True)).kind == "auto_reply"


def test_the_products_own_mail_is_auto_submitted():
    sent = product_mail_send(
        to=["ann@acme.example.com"], subject="You were mentioned", text="Bo mentioned you."
    )

    assert sent == 1
    (email,) = mail.outbox
    assert email.extra_headers["Auto-Submitted"] == "auto-generated"
    assert "Auto-Submitted: auto-generated" in email.message().as_string()
