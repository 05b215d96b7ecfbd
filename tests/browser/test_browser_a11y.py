"""Every page as an admin and as a member: axe-core's checks for names, labels and
text contrast at 1440x900, no horizontal scroll at 390 px (a phone), a visible
focus ring on the key controls, and the phone layout's own controls (the menu
button, with and without JavaScript, and the inbox's one pane at a time).

One browser context per person visits the pages in a loop; each test seeds the
same small account straight through the services, without a mail server: an
inbox with an assigned conversation (a note with a mention) and a closed one,
personal mailboxes, a contact enrolled in a sequence, a team, notifications.
"""

from __future__ import annotations

from datetime import time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts import services as account_services
from conversations.handling import conversation_assign, conversation_set_status, note_create
from crm.contacts import contact_create
from crm.enrollments import enrollment_create
from crm.sequences import SequenceInput, StepInput, sequence_create
from inboxes.addresses import canonical_address
from inboxes.models import Mailbox, MailboxKind
from meetings.bookings import booking_create
from meetings.links import link_create
from meetings.services import meetings_connect
from meetings.slots import free_slots
from notifications.services import notify
from tests.support.conversations_factory import make_conversation
from tests.support.mail import team_inbox

pytest_plugins = ["tests.support.browser"]  # the browser and pages fixtures
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
# The axe rules this suite holds every page to: every control and link has a
# name, every form field a label, and text has enough contrast (WCAG AA, 4.5:1).
# (axe's whole default rule set found nothing else on these pages when this was
# written.) axe has no rule for a visible focus: the focus test below checks it.
AXE_RULES = [
    "label",
    "button-name",
    "link-name",
    "select-name",
    "input-button-name",
    "input-image-alt",
    "image-alt",
    "svg-img-alt",
    "aria-input-field-name",
    "aria-toggle-field-name",
    "aria-command-name",
    "summary-name",
    "frame-title",
    "nested-interactive",
    "aria-allowed-attr",
    "aria-valid-attr-value",
    "landmark-unique",
    "empty-table-header",
    "color-contrast",
    "link-in-text-block",
]
# The email frames are sandboxed without scripts, so axe cannot run inside them;
# waiting for them to answer would only cost time.
AXE_OPTIONS = {"runOnly": {"type": "rule", "values": AXE_RULES}, "iframes": False}


def personal_mailbox(owner, address: str) -> Mailbox:
    """A connected personal mailbox row (no server behind it: nothing here syncs)."""
    return Mailbox.objects.create(
        account=owner.account,
        address=address,
        canonical_address=canonical_address(address),
        kind=MailboxKind.PERSONAL,
        owner=owner,
        connected_by=owner,
    )


UTC_ZONE = ZoneInfo("UTC")


def seed(admin, member) -> dict[str, list[tuple[str, str]]]:
    """The account's data, and for each person the pages to visit (name, path)."""
    account = admin.account
    inbox = team_inbox(account)
    conversation = make_conversation(
        inbox, subject="Printer on fire", text="It smells of smoke.\n", messages=2
    )
    boxes = {
        "admin": personal_mailbox(admin, "ann@acme.example.com"),
        "member": personal_mailbox(member, "bo@acme.example.com"),
    }
    contact = contact_create(
        account=account, owner=member, email="carol@customer.example.com", name="Carol Jones"
    )
    sequence = sequence_create(
        owner=member,
        data=SequenceInput(
            name="Follow up",
            mailbox=boxes["member"],
            window_start=time(9, 0),
            window_end=time(17, 0),
            timezone="UTC",
            steps=[StepInput(subject="Hello", text="Hi there"), StepInput(text="Again?")],
        ),
    )
    # What a conversation shows besides mail: a note with a mention, an event, a badge
    note_create(actor=admin, conversation=conversation, text="@bo can you look at this?")
    conversation_assign(actor=admin, conversation=conversation, assignee=member)
    closed = make_conversation(inbox, subject="Old question", text="Solved, thanks")
    conversation_set_status(actor=admin, conversation=closed, status="closed")
    enrollment_create(actor=member, sequence=sequence, contact=contact)
    account_services.team_save(actor=admin, name="Tier 1", members=[admin, member])
    # Bo's meetings tool with a link and an upcoming booking (its Delete and Cancel).
    meetings_connect(user=member, address="bo@acme.example.com")
    link = link_create(
        owner=member,
        data={"name": "Intro call", "durations": [30], "timezone": "UTC", "min_notice_minutes": 0},
    )
    first = free_slots(
        link, start=timezone.now().date() + timedelta(days=1), days=14, tz=UTC_ZONE, duration=30
    )[0]
    booking_create(
        link=link,
        start=first.start,
        duration=30,
        name="Dana Prospect",
        email="dana@prospect.example.com",
        answers={},
        timezone="UTC",
    )
    for user in (admin, member):
        notify(
            account_id=account.pk,
            users=[user],
            kind="assigned",
            text="Ann Smith assigned Printer on fire to you",
            url=f"/inbox/c/{conversation.pk}/",
            subject_type="conversation",
            subject_id=conversation.pk,
            key=f"seed-{user.pk}",
        )
    shared = [
        ("email settings", "/settings/email/"),
        ("inbox", "/inbox/"),
        ("conversation", f"/inbox/c/{conversation.pk}/"),
        ("new email", "/inbox/new/"),
        ("contacts", "/contacts/"),
        ("contact", f"/contacts/{contact.pk}/"),
        ("new contact", "/contacts/new/"),
        ("edit contact", f"/contacts/{contact.pk}/edit/"),
        ("import contacts", "/contacts/import/"),
        ("compose", f"/contacts/{contact.pk}/email/"),
        ("sequences", "/sequences/"),
        ("sequence", f"/sequences/{sequence.pk}/"),
        ("new sequence", "/sequences/new/"),
        ("edit sequence", f"/sequences/{sequence.pk}/edit/"),
        ("notifications", "/notifications/"),
        ("notification settings", "/settings/notifications/"),
        ("preferences", "/settings/preferences/"),
        ("meetings settings", "/settings/meetings/"),
        ("booking page", f"/meet/{link.slug}/"),
        ("api tokens", "/settings/tokens/"),
    ]
    admin_only = [
        ("mailbox", f"/settings/mailboxes/{boxes['admin'].pk}/"),
        ("inboxes", "/settings/inboxes/"),
        ("inbox routing", f"/settings/inboxes/{inbox.pk}/routing/"),
        ("inbox overview", f"/inbox/overview/{inbox.pk}/"),
        ("users", "/settings/users/"),
        ("edit a user", f"/settings/users/{member.pk}/edit/"),
        ("teams", "/settings/teams/"),
        ("audit log", "/settings/audit/"),
    ]
    return {
        "admin": shared + admin_only,
        "member": shared + [("mailbox", f"/settings/mailboxes/{boxes['member'].pk}/")],
    }


def logged_in(pages, user, viewport: dict, javascript: bool = True) -> Page:
    """A new context with ``user``'s session (made by the test client; the login
    form has its own tests)."""
    client = Client()
    client.force_login(user)
    page = pages.new(viewport=viewport, javascript=javascript)
    name = settings.SESSION_COOKIE_NAME
    page.context.add_cookies(
        [{"name": name, "value": client.cookies[name].value, "url": pages.base_url}]
    )
    return page


def anonymous(pages, viewport: dict) -> Page:
    return pages.new(viewport=viewport)


def visit(page: Page, path: str) -> None:
    response = page.goto(path)
    assert response is not None and response.status == 200, (
        f"{path}: {response and response.status}"
    )
    page.wait_for_load_state("load")


def axe_report(page: Page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options=AXE_OPTIONS)
    found = []
    for violation in results.response["violations"]:
        for node in violation["nodes"]:
            message = "; ".join(
                check["message"] for part in ("any", "all", "none") for check in node[part]
            )
            found.append(f"{violation['id']}: {' '.join(node['target'])}: {message}")
    return found


@pytest.mark.parametrize("role", ["admin", "member"])
def test_every_page_names_its_controls_and_has_readable_text(pages, admin, member, role):
    paths = seed(admin, member)[role]
    page = logged_in(pages, admin if role == "admin" else member, DESKTOP)
    problems = {}
    for name, path in paths:
        visit(page, path)
        found = axe_report(page)
        if found:
            problems[f"{name} ({path})"] = found
    visitor = anonymous(pages, DESKTOP)
    visit(visitor, "/login/")
    if found := axe_report(visitor):
        problems["login (/login/)"] = found
    assert not problems, "\n".join(
        f"{where}:\n  " + "\n  ".join(items) for where, items in problems.items()
    )


# The elements whose right edge lies past the window, innermost first: what a
# failure message names so the culprit is found without a screenshot.
_STICKING_OUT = """
() => [...document.querySelectorAll("body *")]
  .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5)
  .filter((el) => ![...el.children].some((child) => child.getBoundingClientRect().right > window.innerWidth + 0.5))
  .slice(0, 5)
  .map((el) => `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}${el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\\s+/).join(".") : ""} (right edge ${Math.round(el.getBoundingClientRect().right)})`)
"""


def overflow(page: Page) -> list[str]:
    """What makes the page wider than the window (nothing: no horizontal scroll)."""
    extra = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if extra <= 0:
        return []
    return [f"{extra} px too wide", *page.evaluate(_STICKING_OUT)]


@pytest.mark.parametrize("role", ["admin", "member"])
def test_every_page_fits_a_phone(pages, admin, member, role):
    paths = seed(admin, member)[role]
    page = logged_in(pages, admin if role == "admin" else member, PHONE)
    too_wide = {}
    for name, path in [*paths, ("login", "/login/")]:
        if name == "login":
            page.context.clear_cookies()
        visit(page, path)
        pages.screenshot(page, f"phone-{role}-{name.replace(' ', '-')}")
        if found := overflow(page):
            too_wide[f"{name} ({path})"] = found
    assert not too_wide, "Wider than a 390 px phone:\n" + "\n".join(
        f"{where}: " + ", ".join(items) for where, items in too_wide.items()
    )


def menu_button(page: Page):
    # A <summary>: browsers give it the button role, Playwright's role engine does not.
    return page.locator("#menu > summary")


def site_nav(page: Page):
    return page.get_by_role("navigation", name="Main")


def test_on_a_phone_the_top_links_fold_behind_a_menu_button(pages, admin, member):
    seed(admin, member)
    page = logged_in(pages, admin, PHONE)
    visit(page, "/contacts/")

    # Folded: only the button shows, and says it is collapsed
    expect(menu_button(page)).to_be_visible()
    expect(menu_button(page)).to_have_attribute("aria-expanded", "false")
    expect(site_nav(page).get_by_role("link", name="Inbox", exact=True)).to_be_hidden()

    # Opened: every link, the current one marked, over the page (which does not widen)
    menu_button(page).click()
    expect(menu_button(page)).to_have_attribute("aria-expanded", "true")
    pages.screenshot(page, "phone-menu-open")
    assert axe_report(page) == []
    links = site_nav(page).get_by_role("link")
    expect(links).to_have_text(["Inbox", "Contacts", "Sequences", "Settings"])
    expect(site_nav(page).get_by_role("link", name="Contacts")).to_have_attribute(
        "aria-current", "page"
    )
    assert overflow(page) == []

    # Escape folds it again and leaves the keyboard on the button
    site_nav(page).get_by_role("link", name="Sequences").focus()
    page.keyboard.press("Escape")
    expect(menu_button(page)).to_have_attribute("aria-expanded", "false")
    expect(menu_button(page)).to_be_focused()
    expect(links.first).to_be_hidden()

    # A link in the menu leads on
    menu_button(page).click()
    site_nav(page).get_by_role("link", name="Settings").click()
    expect(page).to_have_url(f"{pages.base_url}/settings/email/")

    # On a wide screen the links show and the button does not
    page.set_viewport_size(DESKTOP)
    expect(menu_button(page)).to_be_hidden()
    expect(site_nav(page).get_by_role("link", name="Inbox", exact=True)).to_be_visible()


def test_the_phone_menu_opens_without_javascript(pages, admin, member):
    seed(admin, member)
    page = logged_in(pages, member, PHONE, javascript=False)
    visit(page, "/settings/email/")
    inbox_link = site_nav(page).get_by_role("link", name="Inbox", exact=True)
    expect(inbox_link).to_be_hidden()
    page.locator("#menu > summary").click()
    expect(inbox_link).to_be_visible()
    expect(site_nav(page).get_by_role("link", name="Users")).to_have_count(0)
    inbox_link.click()
    expect(page).to_have_url(f"{pages.base_url}/inbox/")
    # And on a wide screen, without JavaScript, the links simply show
    page.set_viewport_size(DESKTOP)
    visit(page, "/contacts/")
    expect(site_nav(page).get_by_role("link", name="Inbox", exact=True)).to_be_visible()
    expect(page.locator("#menu > summary")).to_be_hidden()


def test_on_a_phone_the_inbox_shows_the_list_then_the_conversation_then_the_list(
    pages, admin, member
):
    seed(admin, member)
    page = logged_in(pages, member, PHONE)
    visit(page, "/inbox/?view=open")
    row = page.locator("#conv-list .row").filter(has_text="Printer on fire")
    expect(row).to_be_visible()
    expect(page.locator("#conversation-pane")).to_be_hidden()
    assert overflow(page) == []

    # Opening a conversation replaces the list; the pane has a way back
    row.click()
    expect(page.locator("#conv-header h2")).to_have_text("Printer on fire")
    expect(page.locator("#list-pane")).to_be_hidden()
    back = page.get_by_role("link", name="Back to list")
    expect(back).to_be_visible()
    assert overflow(page) == []
    assert axe_report(page) == []

    # Back to list shows the same list again, and no conversation
    back.click()
    expect(page).to_have_url(f"{pages.base_url}/inbox/?view=open")
    expect(row).to_be_visible()
    expect(page.locator("#conversation-pane")).to_be_hidden()

    # Loaded as a whole page (a link from elsewhere), the way back is there too
    visit(page, page.locator("#conv-list .row-link").first.get_attribute("href"))
    expect(page.get_by_role("link", name="Back to list")).to_be_visible()

    # Wide enough for the list beside the conversation: no such link
    page.set_viewport_size(DESKTOP)
    expect(page.locator("#list-pane")).to_be_visible()
    expect(page.get_by_role("link", name="Back to list")).to_be_hidden()


# What the focused element looks like, then the same element without the focus (it
# gets the focus back afterwards, so the next Tab goes on from there).
_FOCUS_STYLE = """
() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const look = () => {
    const s = getComputedStyle(el);
    return { outline: s.outlineStyle === "none" ? "none" : `${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor}`,
             shadow: s.boxShadow };
  };
  const focused = look();
  el.blur();
  const plain = look();
  el.focus();
  const name = el.id || el.getAttribute("aria-label") || (el.textContent || "").trim().slice(0, 30) || el.name;
  return { what: `${el.tagName.toLowerCase()} ${name}`, focused, plain };
}
"""


def unseen_focus(page: Page, presses: int) -> list[str]:
    """The controls, among the next ``presses`` Tab stops, that look the same focused."""
    missing = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        found = page.evaluate(_FOCUS_STYLE)
        if found is None:
            continue
        focused, plain = found["focused"], found["plain"]
        ring = focused["outline"] != "none" and not focused["outline"].startswith("solid 0px")
        if focused == plain or not (ring or focused["shadow"] != "none"):
            missing.append(found["what"])
    return missing


def tab_through(page: Page) -> list[str]:
    """The first few Tab stops of the page (the skip link and the top bar), then,
    after following the skip link, those of the page's own content."""
    missing = unseen_focus(page, 4)
    skip = page.get_by_role("link", name="Skip to content")
    skip.focus()
    expect(skip).to_be_visible()
    page.keyboard.press("Enter")
    return missing + unseen_focus(page, 12)


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_the_keyboard_focus_is_visible_on_the_key_pages(pages, admin, member, width):
    paths = dict(seed(admin, member)["admin"])
    page = logged_in(pages, admin, DESKTOP if width == "desktop" else PHONE)
    unseen = {}
    for name in ("inbox", "conversation", "email settings", "inboxes", "contacts", "compose"):
        visit(page, paths[name])
        if missing := tab_through(page):
            unseen[name] = missing
    assert not unseen, f"Focused controls that do not look focused: {unseen}"
