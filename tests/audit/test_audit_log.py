"""Settings > Audit log: what changed (before -> after), filters by action and person,
pages, says its time zone, and exports CSV that a spreadsheet can't run."""

import csv
import io

import pytest

from accounts import services as account_services
from audit.models import AuditEvent
from audit.services import audit_record
from conversations import services as inbox_services
from inboxes.models import Inbox

pytestmark = pytest.mark.django_db


def _csv(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_the_log_filters_by_action_and_person(client, admin, member):
    audit_record(
        account=admin.account, actor=admin, action="inbox.created", target_repr="TGT-SALES"
    )
    audit_record(
        account=admin.account, actor=member, action="mailbox.connected", target_repr="TGT-BO"
    )
    audit_record(account=admin.account, actor=None, action="mailbox.synced", target_repr="TGT-SYS")
    client.force_login(admin)

    page = client.get("/settings/audit/", {"action": "inbox.created"}).content.decode()
    assert "TGT-SALES" in page and "TGT-BO" not in page and "TGT-SYS" not in page

    page = client.get("/settings/audit/", {"actor": str(member.pk)}).content.decode()
    assert "TGT-BO" in page and "TGT-SALES" not in page

    page = client.get("/settings/audit/", {"actor": "system"}).content.decode()
    assert "TGT-SYS" in page and "TGT-SALES" not in page and "TGT-BO" not in page

    page = client.get("/settings/audit/", {"actor": "not-an-id"})
    assert page.status_code == 200 and "Nothing matches these filters" in page.content.decode()

    # The filters offer the actions and the people the log holds
    page = client.get("/settings/audit/").content.decode()
    assert '<option value="mailbox.connected"' in page
    assert f'<option value="{member.pk}">Bo Lee</option>' in page
    assert "Times are in UTC." in page


def test_the_log_pages_and_paging_keeps_the_filter(client, admin):
    for n in range(55):
        audit_record(account=admin.account, actor=admin, action="team.created", target_repr=f"T{n}")
    audit_record(account=admin.account, actor=admin, action="inbox.created", target_repr="Other")
    client.force_login(admin)

    first = client.get("/settings/audit/", {"action": "team.created"}).content.decode()
    assert "Page 1 of 2" in first
    assert "?action=team.created&amp;page=2" in first
    second = client.get("/settings/audit/", {"action": "team.created", "page": 2}).content.decode()
    assert second.count("<code>team.created</code>") == 5
    assert "Other" not in second


def test_another_accounts_events_never_show(client, admin, outsider):
    audit_record(
        account=outsider.account, actor=outsider, action="user.created", target_repr="secret"
    )
    client.force_login(admin)
    assert "secret" not in client.get("/settings/audit/").content.decode()
    rows = _csv(client.get("/settings/audit/export.csv"))
    assert all("secret" not in cell for row in rows for cell in row)


def test_the_csv_export_escapes_cells_a_spreadsheet_would_run(client, admin):
    account_services.team_save(actor=admin, name='=HYPERLINK("http://x")', members=[])
    audit_record(account=admin.account, actor=admin, action="inbox.created", target_repr="+1 Sales")
    audit_record(account=admin.account, actor=admin, action="inbox.created", target_repr="-2")
    audit_record(account=admin.account, actor=admin, action="inbox.created", target_repr="@SUM(A1)")
    audit_record(account=admin.account, actor=admin, action="inbox.created", target_repr="Plain")
    client.force_login(admin)

    response = client.get("/settings/audit/export.csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = _csv(response)
    assert rows[0][:5] == ["time_utc", "actor", "action", "target_type", "target"]
    targets = [row[4] for row in rows[1:]]
    assert targets == ["Plain", "'@SUM(A1)", "'-2", "'+1 Sales", '\'=HYPERLINK("http://x")']


def test_the_csv_export_follows_the_filters_and_is_for_admins_only(client, admin, member):
    audit_record(account=admin.account, actor=admin, action="inbox.created", target_repr="A")
    audit_record(account=admin.account, actor=member, action="team.created", target_repr="B")
    client.force_login(admin)
    rows = _csv(client.get("/settings/audit/export.csv", {"action": "team.created"}))
    assert [row[4] for row in rows[1:]] == ["B"]
    client.force_login(member)
    assert client.get("/settings/audit/export.csv").status_code == 403


def test_team_and_inbox_updates_record_before_and_after(client, admin, member):
    team = account_services.team_save(actor=admin, name="Tier 1", members=[admin])
    account_services.team_save(actor=admin, team=team, name="Tier 2", members=[admin, member])
    updated = AuditEvent.objects.get(action="team.updated")
    assert updated.data["changes"] == {
        "name": {"before": "Tier 1", "after": "Tier 2"},
        "members": {"before": [admin.email], "after": sorted([admin.email, member.email])},
    }

    inbox = Inbox.objects.create(account=admin.account, name="Support", from_name="Acme")
    inbox_services.inbox_update(actor=admin, inbox=inbox, from_name="Acme Support", name="Help")
    event = AuditEvent.objects.get(action="inbox.updated")
    assert event.data["changes"] == {
        "name": {"before": "Support", "after": "Help"},
        "from_name": {"before": "Acme", "after": "Acme Support"},
    }

    client.force_login(admin)
    page = client.get("/settings/audit/").content.decode()
    assert "from_name: Acme → Acme Support" in page
    assert "name: Tier 1 → Tier 2" in page
    rows = _csv(client.get("/settings/audit/export.csv", {"action": "inbox.updated"}))
    assert rows[1][6] == "name: Support → Help; from_name: Acme → Acme Support"
