"""The Sequences pages in Chromium: create a sequence with two steps, see it listed,
pause and unenroll (which asks first) on its page; at 1440 and 390 px wide."""

from __future__ import annotations

import pytest

from crm.enrollments import enrollments_create
from crm.models import EnrollmentState, Sequence

pytest_plugins = ["tests.support.browser"]

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("width", [1440, 390])
def test_create_enrol_pause_unenroll(pages, member, member_mailbox, contacts, password, width):
    page = pages.log_in(member.email, password)
    page.set_viewport_size({"width": width, "height": 900})
    if width < 640:  # on a phone the main links fold behind the Menu button
        page.locator("#menu > summary").click()
    page.get_by_role("link", name="Sequences").click()
    page.get_by_role("link", name="New sequence").click()
    page.get_by_label("Name").fill("Trial follow-up")
    page.get_by_label("Time zone").select_option("Europe/Amsterdam")
    page.locator("#step-0-subject").fill('Hi {{ contact.first_name | default: "there" }}')
    page.locator("#step-0-text").fill("Welcome aboard.")
    page.get_by_role("button", name="Add a step").click()
    page.locator("#step-1-text").fill("Any questions?")
    pages.screenshot(page, f"sequence-form-{width}")
    page.get_by_role("button", name="Create sequence").click()
    page.wait_for_url("**/sequences/*/")
    sequence = Sequence.objects.get()
    assert [s.delay_days for s in sequence.steps.order_by("position")] == [0, 3]

    enrollments_create(actor=member, sequence=sequence, contacts=contacts)
    page.reload()
    pages.screenshot(page, f"sequence-detail-{width}")
    row = page.locator("#enrollments tbody tr").first
    row.get_by_role("button", name="Pause").click()
    page.wait_for_selector("text=is paused")
    row = page.locator("#enrollments tbody tr").first
    yes = row.get_by_role("button", name="Yes, unenroll")
    assert not yes.is_visible()  # asks first
    row.get_by_text("Unenroll…").click()
    yes.click()
    page.wait_for_selector("text=is unenrolled")
    states = sorted(sequence.enrollments.values_list("state", flat=True))
    assert states == [EnrollmentState.ACTIVE, EnrollmentState.ACTIVE, EnrollmentState.STOPPED]

    if width < 640:
        page.locator("#menu > summary").click()
    page.get_by_role("link", name="Sequences", exact=True).first.click()
    pages.screenshot(page, f"sequences-{width}")
    assert page.locator("#sequences").get_by_text("Trial follow-up").is_visible()
