"""The settings pages in a real browser: Chromium, htmx and the strict CSP, against
the live server, a real Dovecot and a real SMTP server.

Each test reads given / when / then, checks what the user sees and then what the
database holds. The ``pages`` fixture fails a test on any console error,
uncaught JavaScript error, CSP violation or request that leaves 127.0.0.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from axes.models import AccessAttempt
from playwright.sync_api import Locator, Page, expect

from accounts import services as account_services
from audit.models import AuditEvent
from inboxes import services as mailbox_services
from inboxes.models import Inbox, Mailbox, MailboxKind, MailboxStatus
from inboxes.services import ServerInput

pytest_plugins = ["tests.support.browser"]  # the browser and pages fixtures
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# --- helpers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailLogin:
    """A user known to the test Dovecot and SMTP server, and where to find them."""

    imap_port: int
    smtp_port: int
    username: str
    password: str

    def server_inputs(self) -> tuple[ServerInput, ServerInput]:
        return (
            ServerInput(
                host="127.0.0.1",
                port=self.imap_port,
                security="ssl",
                username=self.username,
                password=self.password,
            ),
            ServerInput(
                host="127.0.0.1",
                port=self.smtp_port,
                security="starttls",
                username=self.username,
                password=self.password,
            ),
        )


@pytest.fixture
def mail_login(dovecot, smtp_server, mail_user) -> MailLogin:
    username, password = mail_user
    return MailLogin(dovecot.imaps_port, smtp_server.port, username, password)


def fill_mailbox_form(
    form: Locator, address: str, mail: MailLogin, *, password: str | None = None
) -> None:
    """Type what a user copies from their provider's help page into the connect form."""
    form.get_by_label("Email address").fill(address)
    imap = form.get_by_role("group", name="Incoming mail (IMAP)")
    imap.get_by_label("Server").fill("127.0.0.1")
    imap.get_by_label("Port").fill(str(mail.imap_port))
    imap.get_by_label("Security").select_option(label="SSL/TLS")
    imap.get_by_label("User name").fill(mail.username)
    imap.get_by_label("Password").fill(password or mail.password)
    smtp = form.get_by_role("group", name="Outgoing mail (SMTP)")
    smtp.get_by_label("Server").fill("127.0.0.1")
    smtp.get_by_label("Port").fill(str(mail.smtp_port))
    smtp.get_by_label("Security").select_option(label="STARTTLS")
    smtp.get_by_label("User name").fill(mail.username)
    smtp.get_by_label("Password").fill(password or mail.password)


def personal_form(page: Page) -> Locator:
    return page.locator("#connect-personal")


def connect_personal_email(user, address: str, mail: MailLogin) -> Mailbox:
    """Given-step: ``user`` has already connected ``address`` (through the same service the page uses)."""
    imap, smtp = mail.server_inputs()
    return mailbox_services.mailbox_connect(
        actor=user, address=address, kind=MailboxKind.PERSONAL, imap=imap, smtp=smtp
    )


def connected(address: str):
    return Mailbox.objects.exclude(status=MailboxStatus.DISCONNECTED).filter(
        canonical_address=address.lower()
    )


def flash(page: Page) -> Locator:
    return page.locator("#messages")


# --- 1. logging in ------------------------------------------------------------------------


def test_a_wrong_password_shows_an_error_and_the_right_one_lands_on_settings_email(
    pages, member, password
):
    # Given Bo opens Postkamer without being logged in
    page = pages.new()
    page.goto("/")
    expect(page).to_have_url(pages.base_url + "/login/?next=/settings/email/")
    expect(page.get_by_role("heading", name="Log in to Postkamer")).to_be_visible()

    # When he types a wrong password
    page.get_by_label("Email").fill("bo@acme.example.com")
    page.get_by_label("Password").fill("not my password")
    page.get_by_role("button", name="Log in").click()

    # Then he stays on the login page with an error, and the failure is counted
    expect(page.locator(".errorlist")).to_contain_text("correct")
    expect(page.get_by_role("heading", name="Log in to Postkamer")).to_be_visible()
    expect(page.get_by_role("navigation", name="Settings")).to_have_count(0)
    pages.screenshot(page, "login")
    assert (
        AccessAttempt.objects.filter(username="bo@acme.example.com").get().failures_since_start == 1
    )

    # When he types the right one
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()

    # Then he lands on Settings > Email, logged in as himself
    expect(page).to_have_url(pages.base_url + "/settings/email/")
    expect(page.get_by_role("heading", name="Your email")).to_be_visible()
    nav = page.get_by_role("navigation", name="Settings sections")
    expect(nav.get_by_role("link", name="Your email", exact=True)).to_have_class("active")
    expect(page.locator("header .who")).to_contain_text("Bo Lee · Acme")
    expect(page.locator("#no-mailboxes")).to_have_text("You have not connected an email yet.")
    member.refresh_from_db()
    assert member.last_login is not None
    assert not AccessAttempt.objects.filter(username="bo@acme.example.com").exists()


# --- 2. connecting a personal email -------------------------------------------------------


def test_a_member_tests_and_connects_a_personal_imap_mailbox(pages, member, password, mail_login):
    # Given Bo is on Settings > Email with the form filled in for his real mailbox
    page = pages.log_in("bo@acme.example.com", password)
    form = personal_form(page)
    fill_mailbox_form(form, "bo@acme.example.com", mail_login)

    # When he tests the connection
    held = []  # the request is held back to watch the page while the test runs
    page.route("**/settings/email/test/", lambda route: held.append(route))
    test_button = form.get_by_role("button", name="Test connection")
    test_button.click()

    # Then, while it runs, he sees it is testing and cannot start it twice
    expect(page.get_by_text("Testing the connection…")).to_be_visible()
    expect(test_button).to_be_disabled()
    for _ in range(100):  # Playwright hands over the held request while it waits
        if held:
            break
        page.wait_for_timeout(20)
    assert len(held) == 1
    held[0].continue_()

    # Then every step passes, shown in place without leaving the page
    result = page.locator("#test-result")
    expect(result).to_contain_text("Connection test passed.")
    steps = result.locator(".steps li")
    expect(steps).to_have_count(6)
    expect(result.locator(".steps li.ok")).to_have_count(6)
    expect(result.locator(".steps li.failed")).to_have_count(0)
    expect(steps.nth(3)).to_have_text(f"IMAP auth: Logged in as {mail_login.username}.")
    expect(page.get_by_text("Testing the connection…")).to_be_hidden()
    expect(test_button).to_be_enabled()
    assert not Mailbox.objects.exists()  # a test saves nothing

    # When he connects it
    pages.screenshot(page, "email-form")
    form.get_by_role("button", name="Connect", exact=True).click()

    # Then it is listed as Connected
    expect(flash(page)).to_have_text("bo@acme.example.com is connected.")
    row = page.locator("#mailboxes tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("bo@acme.example.com")
    expect(row.locator(".badge")).to_have_text("Connected")
    pages.screenshot(page, "email")

    # And the database holds his personal mailbox, its password encrypted
    mailbox = Mailbox.objects.get()
    assert (mailbox.owner, mailbox.kind, mailbox.status) == (member, "personal", "connected")
    assert (mailbox.imap_host, mailbox.imap_port, mailbox.imap_security) == (
        "127.0.0.1",
        mail_login.imap_port,
        "ssl",
    )
    assert (mailbox.smtp_port, mailbox.smtp_security) == (mail_login.smtp_port, "starttls")
    assert mailbox.secrets_ciphertext
    assert mail_login.password.encode() not in bytes(mailbox.secrets_ciphertext)


def test_a_wrong_password_shows_the_failing_auth_step_and_saves_nothing(
    pages, member, password, mail_login
):
    # Given Bo filled in the form with a wrong mailbox password
    page = pages.log_in("bo@acme.example.com", password)
    form = personal_form(page)
    fill_mailbox_form(form, "bo@acme.example.com", mail_login, password="wrong-password")

    # When he tests the connection
    form.get_by_role("button", name="Test connection").click()

    # Then he reads in plain words that the login failed, after dns, tcp and tls passed
    result = page.locator("#test-result")
    expect(result).to_contain_text("Connection test failed at the auth step.")
    expect(result.locator(".steps li.ok")).to_have_count(3)
    failed = result.locator(".steps li.failed")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("IMAP auth: Login failed")
    expect(result).not_to_contain_text("wrong-password")

    # When he presses Connect anyway
    pages.problems.expect_console_error(r"status of 422")
    form.get_by_role("button", name="Connect", exact=True).click()

    # Then the page refuses with the same failing step and what to check, and keeps the address
    conflict = page.locator("#conflict")
    expect(conflict).to_contain_text("The connection test failed at the auth step (IMAP)")
    expect(conflict.locator(".steps li.failed")).to_contain_text("IMAP auth: Login failed")
    expect(conflict).to_contain_text("Check the server name, port, security and password")
    expect(personal_form(page).get_by_label("Email address")).to_have_value("bo@acme.example.com")
    expect(page.locator("#no-mailboxes")).to_be_visible()

    # And nothing is saved; both failed attempts are in the audit log with their step
    assert not Mailbox.objects.exists()
    failures = AuditEvent.objects.filter(action="mailbox.connection_test_failed")
    assert [event.data["step"] for event in failures] == ["auth", "auth"]
    assert all(event.actor == member for event in failures)


# --- 3. a conflict that explains itself (R6) ----------------------------------------------


def test_a_member_sees_an_address_is_in_use_without_being_told_who_holds_it(
    pages, member, other_member, password, mail_login
):
    # Given Bo has connected his personal email
    bos = connect_personal_email(member, "bo@acme.example.com", mail_login)

    # When Cy types the same address in other letters and leaves the field
    page = pages.log_in("cy@acme.example.com", password)
    form = personal_form(page)
    form.get_by_label("Email address").fill("BO@Acme.Example.com")
    form.get_by_label("Email address").press("Tab")

    # Then htmx tells him right there that it is in use, and the way out, but not by whom
    availability = page.locator("#availability-personal")
    expect(availability).to_contain_text("BO@Acme.Example.com is already in use in your account.")
    expect(availability).to_contain_text("Ask an account admin")
    expect(availability).not_to_contain_text("Bo Lee")
    expect(availability).not_to_contain_text("bo@acme.example.com")

    # When he fills in the rest anyway and presses Connect
    pages.problems.expect_console_error(r"status of 409")
    fill_mailbox_form(form, "BO@Acme.Example.com", mail_login)
    form.get_by_role("button", name="Connect", exact=True).click()

    # Then the page refuses the same way, with no release button and no name anywhere
    conflict = page.locator("#conflict")
    expect(conflict).to_contain_text("BO@Acme.Example.com is already in use in your account.")
    expect(conflict).to_contain_text("Ask an account admin: they can see who holds it")
    expect(conflict.get_by_role("button")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text("Bo Lee")
    expect(page.locator("#no-mailboxes")).to_be_visible()

    # And the address still belongs to Bo alone
    assert list(connected("bo@acme.example.com")) == [bos]
    assert not Mailbox.objects.filter(owner=other_member).exists()


# --- 4. orphans can be released (R7) --------------------------------------------------------


def test_an_admin_deactivates_a_user_releases_his_mailbox_and_another_member_connects_it(
    pages, admin, member, other_member, password, mail_login
):
    # Given Bo has connected his personal email
    bos = connect_personal_email(member, "bo@acme.example.com", mail_login)

    # When Ann deactivates Bo on Settings > Users
    page = pages.log_in("ann@acme.example.com", password)
    page.get_by_role("navigation", name="Settings").get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", name="Users")).to_be_visible()
    bo_row = page.locator(f"#user-{member.pk}")
    expect(bo_row.locator(".badge").first).to_have_text("Active")
    expect(bo_row.get_by_role("button", name="Release")).to_have_count(0)
    bo_row.get_by_role("link", name="Deactivate Bo Lee").click()
    page.locator("#confirm").get_by_role("button", name="Deactivate").click()

    # Then Bo shows as deactivated, with his address and a Release button
    expect(flash(page)).to_contain_text("Bo Lee is deactivated.")
    bo_row = page.locator(f"#user-{member.pk}")
    expect(bo_row).to_contain_text("Deactivated")
    held = bo_row.locator(f"#user-mailbox-{bos.pk}")
    expect(held).to_contain_text("bo@acme.example.com")
    pages.screenshot(page, "users")

    # When she releases it
    held.get_by_role("button", name="Release").click()

    # Then the address is free and Bo's row lists no email
    expect(flash(page)).to_have_text("bo@acme.example.com is released and can be connected again.")
    expect(page.locator(f"#user-{member.pk}")).to_contain_text("None")
    member.refresh_from_db()
    bos.refresh_from_db()
    assert not member.is_active
    assert bos.status == MailboxStatus.DISCONNECTED
    assert not connected("bo@acme.example.com").exists()

    # When Cy connects the address
    cy = pages.log_in("cy@acme.example.com", password)
    fill_mailbox_form(personal_form(cy), "bo@acme.example.com", mail_login)
    personal_form(cy).get_by_role("button", name="Connect", exact=True).click()

    # Then it is his, connected
    expect(flash(cy)).to_have_text("bo@acme.example.com is connected.")
    expect(cy.locator("#mailboxes tbody tr .badge")).to_have_text("Connected")
    assert connected("bo@acme.example.com").get().owner == other_member


def test_an_admin_connecting_a_deactivated_users_address_is_offered_a_one_step_release(
    pages, admin, member, password, mail_login
):
    # Given Bo connected his personal email and was deactivated since
    bos = connect_personal_email(member, "bo@acme.example.com", mail_login)
    account_services.user_deactivate(actor=admin, user=member)

    # When Ann, an admin, types the address on her own Settings > Email and leaves the field
    page = pages.log_in("ann@acme.example.com", password)
    form = personal_form(page)
    form.get_by_label("Email address").fill("bo@acme.example.com")
    form.get_by_label("Email address").press("Tab")

    # Then she is told who holds it
    expect(page.locator("#availability-personal")).to_contain_text(
        "bo@acme.example.com is already connected as personal email by Bo Lee (deactivated)."
    )

    # When she presses Connect anyway
    pages.problems.expect_console_error(r"status of 409")
    fill_mailbox_form(form, "bo@acme.example.com", mail_login)
    form.get_by_role("button", name="Connect", exact=True).click()

    # Then the refusal names the holder and offers a one-step release
    conflict = page.locator("#conflict")
    expect(conflict).to_contain_text(
        "bo@acme.example.com is already connected as personal email by Bo Lee (deactivated)."
    )
    expect(conflict).to_contain_text("As an admin you can release the address in one step")
    pages.screenshot(page, "email-conflict")

    # When she releases it from there
    conflict.get_by_role("button", name="Release bo@acme.example.com").click()

    # Then she is back on Settings > Email with the address free
    expect(page).to_have_url(pages.base_url + "/settings/email/")
    expect(flash(page)).to_have_text("bo@acme.example.com is released and can be connected again.")
    bos.refresh_from_db()
    assert bos.status == MailboxStatus.DISCONNECTED

    # When she connects it
    fill_mailbox_form(personal_form(page), "bo@acme.example.com", mail_login)
    personal_form(page).get_by_role("button", name="Connect", exact=True).click()

    # Then it is connected, as her personal email
    expect(flash(page)).to_have_text("bo@acme.example.com is connected.")
    expect(page.locator("#mailboxes tbody tr")).to_contain_text("bo@acme.example.com")
    assert connected("bo@acme.example.com").get().owner == admin


# --- 5. a team email for a conversations inbox (R8, R9) -----------------------------------


def test_an_admin_creates_an_inbox_and_connects_a_team_email_only_after_acknowledging_visibility(
    pages, admin, password, mail_login
):
    # Given Ann is on Settings > Inboxes, which has none yet
    page = pages.log_in("ann@acme.example.com", password)
    page.get_by_role("navigation", name="Settings").get_by_role("link", name="Inboxes").click()
    expect(page.locator("#no-inboxes")).to_have_text("No inboxes yet.")

    # When she creates the Support inbox: step 1, its name
    page.get_by_label("Inbox name").fill("Support")
    page.get_by_role("button", name="Create inbox").click()

    # Then she is on step 2, its team email
    expect(flash(page)).to_contain_text("Inbox Support is created.")
    inbox = Inbox.objects.get(name="Support")
    steps = page.locator("#setup-steps li")
    expect(steps).to_have_text(["1. Name ✓", "2. Team email", "3. Routing", "4. Done"])
    expect(page.locator("#setup-steps [aria-current=step]")).to_have_text("2. Team email")
    card = page.locator(f"#inbox-{inbox.pk}")

    # When she fills in the team email without ticking the acknowledgement and connects
    form = card.locator(f"#connect-team-{inbox.pk}")
    expect(form.get_by_role("note")).to_contain_text(
        "All incoming mail to this address will be visible to the whole team."
    )
    fill_mailbox_form(form, "support@acme.example.com", mail_login)
    form.get_by_role("button", name="Connect team email").click()

    # Then the browser asks for the tick before anything is sent (the server's own
    # refusal, R8, is tested in tests/inboxes/test_mailboxes_api.py), and what she
    # typed is still there
    tick = form.get_by_label("I understand that all incoming mail")
    expect(tick).not_to_be_checked()
    assert tick.evaluate("box => box.validity.valueMissing")
    expect(form.get_by_role("note")).to_contain_text(
        "Never connect an address that is used for private mail."
    )
    expect(form.get_by_label("Email address")).to_have_value("support@acme.example.com")
    assert not Mailbox.objects.exists()
    pages.screenshot(page, "inboxes-refused")

    # When she ticks the acknowledgement and connects
    tick.check()
    form.get_by_role("button", name="Connect team email").click()

    # Then she is on step 3, routing, and leaves new conversations unassigned
    expect(flash(page)).to_have_text(
        "support@acme.example.com is now the team email of inbox Support."
    )
    expect(page.locator("#setup-steps [aria-current=step]")).to_have_text("3. Routing")
    page.get_by_label("Stay unassigned").check()
    page.get_by_role("button", name="Save and finish").click()

    # Then the inbox is ready, and its from-name and signature are one click away
    expect(page.get_by_role("heading", name="Support is ready")).to_be_visible()
    expect(page.locator("#setup-done")).to_contain_text("Team email: support@acme.example.com")
    page.get_by_role("link", name="From name, signature and routing").click()
    page.locator("#replies").get_by_label("From name").fill("Acme Support")
    page.locator("#replies").get_by_label("Signature").fill("The Acme support team")
    page.get_by_role("button", name="Save from name and signature").click()

    # Then it is saved and shown
    expect(flash(page)).to_have_text("Inbox Support: from-name and signature saved.")
    expect(page.locator("#replies").get_by_label("From name")).to_have_value("Acme Support")
    page.goto("/settings/inboxes/")
    card = page.locator(f"#inbox-{inbox.pk}")
    expect(card.locator("tbody tr")).to_contain_text("support@acme.example.com")
    expect(card.locator("tbody tr .badge")).to_have_text("Connected")
    expect(card).to_contain_text("From name: Acme Support")
    pages.screenshot(page, "inboxes")

    # And the database holds a team mailbox feeding the inbox, acknowledged
    inbox.refresh_from_db()
    team = inbox.mailbox
    assert (team.address, team.kind, team.status, team.owner) == (
        "support@acme.example.com",
        "team",
        "connected",
        None,
    )
    assert team.team_visibility_acknowledged_at is not None
    assert inbox.from_name == "Acme Support"

    # And the audit log tells the story, newest first
    page.get_by_role("navigation", name="Settings").get_by_role("link", name="Audit log").click()
    actions = page.locator("#audit tbody tr td:nth-child(3) code")
    expect(actions).to_have_text(
        ["inbox.updated", "inbox.routing_changed", "mailbox.connected", "inbox.created"]
    )
    pages.screenshot(page, "audit")


# --- 6. admin actions stay with admins ------------------------------------------------------


@pytest.mark.parametrize("path", ["/settings/users/", "/settings/inboxes/", "/settings/audit/"])
def test_a_member_sees_no_admin_links_and_admin_pages_answer_403(
    pages, member, other_member, password, path
):
    # Given Bo, a member, is logged in
    page = pages.log_in("bo@acme.example.com", password)

    # Then his menu has Inbox, Contacts, Sequences and Settings, and Settings no admin sections
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_text(["Inbox", "Contacts", "Sequences", "Settings"])
    for name in ("Inboxes", "Users", "Audit log"):
        expect(page.get_by_role("link", name=name)).to_have_count(0)

    # When he opens an admin page by its address
    pages.problems.expect_console_error(r"status of 403")
    response = page.goto(path)

    # Then the server answers 403 with a page that says why and leads back
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="You can't open this page")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Only an account admin can open this page.")
    expect(page.get_by_role("link", name="Back to your email settings")).to_have_attribute(
        "href", "/settings/email/"
    )
    pages.screenshot(page, "forbidden")

    # And posting an admin form with a valid CSRF token is refused too, changing nothing
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    answer = page.request.post(
        f"/settings/users/{other_member.pk}/deactivate/", headers={"X-CSRFToken": token}
    )
    assert answer.status == 403
    other_member.refresh_from_db()
    assert other_member.is_active
