"""One Settings area: the shared sub-navigation, admin sections hidden from members and
refused on the server, the plan's numbers, and the metrics link in the inbox."""

import pytest

from accounts.models import Plan
from inboxes.models import Inbox

pytestmark = pytest.mark.django_db

MEMBER_SECTIONS = {
    "/settings/email/": "Your email",
    "/settings/preferences/": "Email preferences",
    "/settings/notifications/": "Notifications",
    "/settings/tokens/": "API tokens",
}
ADMIN_SECTIONS = {
    "/settings/inboxes/": "Inboxes",
    "/settings/teams/": "Teams",
    "/settings/users/": "Users",
    "/settings/audit/": "Audit log",
}


def _nav(html: str) -> str:
    start = html.index('id="settings-nav"')
    return html[start : html.index("</nav>", start)]


def test_every_settings_page_shows_the_one_sub_navigation_with_its_section_current(client, admin):
    client.force_login(admin)
    for url, label in {**MEMBER_SECTIONS, **ADMIN_SECTIONS}.items():
        response = client.get(url)
        assert response.status_code == 200, url
        nav = _nav(response.content.decode())
        for other_label in [*MEMBER_SECTIONS.values(), *ADMIN_SECTIONS.values()]:
            assert f">{other_label}</a>" in nav, (url, other_label)
        assert f'aria-current="page">{label}</a>' in nav, url
        assert nav.count('aria-current="page"') == 1, url


def test_a_member_sees_only_his_sections_and_the_admin_ones_answer_403(client, member):
    client.force_login(member)
    nav = _nav(client.get("/settings/tokens/").content.decode())
    for label in MEMBER_SECTIONS.values():
        assert f">{label}</a>" in nav
    for url, label in ADMIN_SECTIONS.items():
        assert f">{label}</a>" not in nav
        assert url not in nav
        assert client.get(url).status_code == 403, url
    for url in ["/settings/audit/export.csv", "/settings/users/invite/", "/settings/inboxes/new/"]:
        assert client.get(url).status_code == 403, url


def test_the_inboxes_page_says_how_many_inboxes_the_plan_allows(client, admin):
    admin.account.plan = Plan.STARTER
    admin.account.save()
    client.force_login(admin)
    Inbox.objects.create(account=admin.account, name="Support")
    page = client.get("/settings/inboxes/").content.decode()
    assert "1 of 2 inboxes on Starter." in page
    assert 'id="plan-full"' not in page

    Inbox.objects.create(account=admin.account, name="Sales")
    page = client.get("/settings/inboxes/").content.decode()
    assert "2 of 2 inboxes on Starter." in page
    assert 'id="plan-full"' in page


def test_the_inbox_view_links_to_the_inbox_metrics(client, admin):
    inbox = Inbox.objects.create(account=admin.account, name="Support")
    client.force_login(admin)
    page = client.get(f"/inbox/?inbox={inbox.pk}").content.decode()
    assert f'href="/inbox/overview/{inbox.pk}/"' in page
    assert client.get(f"/inbox/overview/{inbox.pk}/").status_code == 200


def test_the_main_menu_marks_settings_on_settings_pages_only(client, admin):
    client.force_login(admin)
    marked = '<a href="/settings/email/" class="active" aria-current="page">Settings</a>'
    for url in ["/settings/tokens/", "/settings/audit/", "/settings/inboxes/new/"]:
        assert marked in client.get(url).content.decode(), url
    for url in ["/notifications/", "/contacts/"]:
        page = client.get(url).content.decode()
        assert marked not in page and ">Settings</a>" in page, url
