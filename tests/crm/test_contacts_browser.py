"""The contacts list and a contact page in a real browser (Chromium, the strict CSP),
at a desktop and a phone width. Set POSTKAMER_SCREENSHOTS=1 to keep screenshots in /tmp."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from crm.models import Note
from tests.support.crm_factory import make_contact, make_logged_email

pytest_plugins = ["tests.support.browser"]  # the browser and pages fixtures
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_member_finds_a_contact_reads_its_timeline_and_adds_a_note(
    pages, account, member, admin, password
):
    dana = make_contact(
        account, "dana@fbi.example.com", name="Dana Scully", company="FBI", owner=admin
    )
    make_contact(account, "fox@example.com", name="Fox Mulder", company="FBI")
    make_contact(account, "walter@example.com", name="Walter Skinner", company="Bureau")
    make_logged_email(dana, subject="The X-Files budget", opens=3, clicks=1)
    make_logged_email(dana, subject="Re: The X-Files budget", direction="inbound")
    page = pages.log_in(member.email, password)
    page.set_viewport_size({"width": 1440, "height": 900})

    # The contacts list, from the top navigation
    page.get_by_role("link", name="Contacts", exact=True).click()
    expect(page.get_by_role("heading", name="Contacts", level=1)).to_be_visible()
    expect(page.locator("#contacts tbody tr")).to_have_count(3)
    pages.screenshot(page, "contacts-1440")

    # Search narrows it to Dana
    page.get_by_label("Search contacts").fill("scul")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#contacts tbody tr")).to_have_count(1)
    expect(page.locator("#contacts")).to_contain_text("dana@fbi.example.com")

    # Her page: details, the timeline newest first, the write-email link
    page.get_by_role("link", name="Dana Scully").click()
    expect(page.get_by_role("heading", name="Dana Scully", level=1)).to_be_visible()
    expect(page.locator("#contact-owner")).to_have_text("Ann Smith")
    events = page.locator("#timeline .event")
    expect(events).to_have_count(2)
    expect(events.nth(0)).to_contain_text("Re: The X-Files budget")
    expect(events.nth(0)).to_contain_text("Received")
    expect(events.nth(1)).to_contain_text("Delivered to the server")
    expect(events.nth(1)).to_contain_text("3 opens · 1 click")
    expect(page.get_by_role("link", name="Write email")).to_have_attribute(
        "href", f"/contacts/{dana.pk}/email/"
    )

    # A note goes on top of the timeline
    page.get_by_label("Note").fill("Prefers a call in the morning.")
    page.get_by_role("button", name="Add note").click()
    expect(page.locator("#messages")).to_contain_text("The note is added.")
    expect(events.nth(0)).to_contain_text("Prefers a call in the morning.")
    expect(events.nth(0)).to_contain_text("by Bo Lee")
    assert Note.objects.get().contact == dana
    pages.screenshot(page, "contact-1440")

    # At a phone's width the columns stack and nothing runs off the side
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    pages.screenshot(page, "contact-390")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.goto("/contacts/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    expect(page.locator("#contacts tbody tr").first).to_be_visible()
    pages.screenshot(page, "contacts-390")


def test_a_member_previews_an_import_with_its_row_errors_and_confirms_it(
    pages, account, member, password, tmp_path
):
    make_contact(account, "dana@fbi.example.com", name="Dana")
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "email;name;company\ndana@fbi.example.com;Dana Scully;FBI\nfox@example.com;Fox Mulder;FBI\nnot-an-address;Nobody;\n"
    )
    page = pages.log_in(member.email, password)
    page.set_viewport_size({"width": 390, "height": 844})

    page.goto("/contacts/")
    page.get_by_role("link", name="Import CSV").click()
    page.get_by_label("CSV file").set_input_files(str(csv_file))
    page.get_by_role("button", name="Preview import").click()

    expect(page.locator("#import-summary")).to_contain_text(
        "1 new contact will be added, 1 contact will be updated"
    )
    expect(page.locator("#import-errors tbody tr")).to_have_text(
        [re.compile(r"4\s*not-an-address is not a valid email address")]
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    pages.screenshot(page, "import-preview-390")
    page.get_by_role("button", name="Import 2 contacts").click()

    expect(page.locator("#messages")).to_contain_text(
        "Import done: 1 new contact was added, 1 contact was updated"
    )
    expect(page.locator("#contacts tbody tr")).to_have_count(2)
