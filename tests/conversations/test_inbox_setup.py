"""Create an inbox as consecutive steps: name -> team email -> routing -> done, with
the plan's numbers (R5)."""

import pytest

from accounts import services as account_services
from accounts.models import Plan
from audit.models import AuditEvent
from conversations.models import RoutingMode, RoutingRule
from inboxes.models import Inbox, Mailbox

pytestmark = pytest.mark.django_db


def test_an_admin_creates_an_inbox_step_by_step(client, admin, member):
    team = account_services.team_save(actor=admin, name="Tier 1", members=[member])
    client.force_login(admin)

    step1 = client.get("/settings/inboxes/new/").content.decode()
    assert 'aria-current="step">1. Name' in step1

    response = client.post("/settings/inboxes/new/", {"name": "Support"})
    inbox = Inbox.objects.get(name="Support")
    assert response["Location"] == f"/settings/inboxes/{inbox.pk}/setup/email/"
    step2 = client.get(response["Location"]).content.decode()
    assert 'aria-current="step">2. Team email' in step2
    assert f'id="connect-team-{inbox.pk}"' in step2

    # Without the acknowledgement the team email is refused, on the same step
    refused = client.post(
        response["Location"],
        {
            "address": "support@acme.example.com",
            "imap_host": "127.0.0.1",
            "imap_port": "993",
            "imap_security": "ssl",
            "imap_username": "support",
            "imap_password": "x",
            "smtp_host": "127.0.0.1",
            "smtp_port": "465",
            "smtp_security": "ssl",
            "smtp_username": "support",
            "smtp_password": "x",
        },
    )
    assert refused.status_code == 400
    assert 'aria-current="step">2. Team email' in refused.content.decode()
    assert not Mailbox.objects.exists()

    step3 = client.get(f"/settings/inboxes/{inbox.pk}/setup/routing/").content.decode()
    assert 'aria-current="step">3. Routing' in step3 and "Tier 1" in step3
    response = client.post(
        f"/settings/inboxes/{inbox.pk}/setup/routing/", {"routing": f"team:{team.pk}"}
    )
    assert response["Location"] == f"/settings/inboxes/{inbox.pk}/setup/done/"
    rule = RoutingRule.objects.get(inbox=inbox)
    assert (rule.mode, rule.team) == (RoutingMode.ROUND_ROBIN, team)

    done = client.get(response["Location"]).content.decode()
    assert 'aria-current="step">4. Done' in done
    assert f'href="/settings/inboxes/{inbox.pk}/settings/' not in done
    assert f'href="/settings/inboxes/{inbox.pk}/routing/#replies"' in done


def test_at_the_plans_limit_the_first_step_says_so_and_creates_nothing(client, admin):
    admin.account.plan = Plan.STARTER
    admin.account.save()
    Inbox.objects.create(account=admin.account, name="Support")
    Inbox.objects.create(account=admin.account, name="Sales")
    client.force_login(admin)

    page = client.get("/settings/inboxes/new/").content.decode()
    assert "2 of 2 inboxes on Starter." in page and 'id="plan-full"' in page

    response = client.post("/settings/inboxes/new/", {"name": "Billing"})
    assert response.status_code == 409
    assert "Upgrade the plan" in response.content.decode()
    assert Inbox.objects.count() == 2
    assert not AuditEvent.objects.filter(action="inbox.created").exists()


def test_an_unknown_team_in_the_routing_step_is_refused(client, admin):
    inbox = Inbox.objects.create(account=admin.account, name="Support")
    client.force_login(admin)
    response = client.post(
        f"/settings/inboxes/{inbox.pk}/setup/routing/", {"routing": "team:nonsense"}
    )
    assert response.status_code == 400
    assert not RoutingRule.objects.filter(inbox=inbox, mode=RoutingMode.ROUND_ROBIN).exists()
