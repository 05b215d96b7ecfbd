"""Who an email of a personal mailbox is with, and whom it is logged on (crm/parties.py)."""

from __future__ import annotations

from crm.parties import contacts_logged, exchange_of
from crm.preferences import NeverLog

OWN = "bo@acme.example.com"


def test_mail_to_the_owner_is_with_its_sender_compared_canonically():
    exchange = exchange_of(OWN, "Carol@CUSTOMER.example.com", [OWN, "dan@partner.example.com"])
    assert not exchange.outgoing
    assert exchange.others == ("carol@customer.example.com",)
    assert contacts_logged(exchange, {"carol@customer.example.com"}, NeverLog([])) == [
        "carol@customer.example.com"
    ]
    # a contact only in copy is not what the mail is with
    assert contacts_logged(exchange, {"dan@partner.example.com"}, NeverLog([])) == []


def test_mail_the_owner_sent_is_with_its_recipients():
    exchange = exchange_of(OWN, "Bo@acme.example.com", ["c.arol+crm@gmail.com", OWN, "x@y.org"])
    assert exchange.outgoing
    assert exchange.others == ("carol@gmail.com", "x@y.org")


def test_addresses_that_are_not_addresses_are_ignored_not_raised():
    exchange = exchange_of(OWN, "undisclosed-recipients:;", ["", "not an address", "@@"])
    assert exchange.others == () and exchange.everyone == ()
    assert contacts_logged(exchange, {"carol@customer.example.com"}, NeverLog([])) == []


def test_anyone_never_logged_on_an_email_keeps_it_off_every_contact():
    never_log = NeverLog(["dan@partner.example.com", "@Lawyer.example.com "])
    assert "eve@lawyer.example.com" in never_log and "dan@partner.example.com" in never_log
    assert "carol@customer.example.com" not in never_log
    contacts = {"carol@customer.example.com", "eve@lawyer.example.com"}
    with_lawyer = exchange_of(OWN, OWN, ["carol@customer.example.com", "eve@lawyer.example.com"])
    assert contacts_logged(with_lawyer, contacts, never_log) == []
    cc_lawyer = exchange_of(OWN, "carol@customer.example.com", [OWN, "eve@lawyer.example.com"])
    assert contacts_logged(cc_lawyer, contacts, never_log) == []
