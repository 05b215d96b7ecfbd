"""The sequences API: DESIGN.md section 4's shapes, codes and permissions."""

from __future__ import annotations

import pytest

from crm.contacts import contact_create
from crm.models import Enrollment
from tests.crm.conftest import personal_mailbox
from tests.support.api import api_client_for

pytestmark = pytest.mark.django_db


def _body(mailbox, **extra):
    return {
        "name": "Welcome",
        "mailbox": str(mailbox.pk),
        "window": {
            "start": "09:00",
            "end": "17:00",
            "timezone": "Europe/Amsterdam",
            "business_days_only": True,
        },
        "steps": [
            {"subject": "Hi {{ contact.first_name }}", "text": "Hello", "delay_days": 0},
            {"subject": "", "text": "Following up", "html": "<p>Up</p>", "delay_days": 3},
        ],
        **extra,
    }


@pytest.fixture
def contact(member):
    return contact_create(account=member.account, owner=member, email="carol@customer.example")


def test_create_read_list(member_api, member_mailbox, member):
    created = member_api.post("/api/v1/sequences/", _body(member_mailbox), format="json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert set(data) >= {"id", "name", "owner", "mailbox", "window", "steps", "stats"}
    assert data["owner"] == str(member.pk)
    assert data["window"] == {
        "start": "09:00",
        "end": "17:00",
        "timezone": "Europe/Amsterdam",
        "business_days_only": True,
    }
    assert data["steps"][1] == {
        "subject": "",
        "text": "Following up",
        "html": "<p>Up</p>",
        "delay_days": 3,
    }
    assert data["stats"] == {
        "enrolled": 0,
        "active": 0,
        "sent": 0,
        "opened": 0,
        "clicked": 0,
        "replied": 0,
        "bounced": 0,
    }
    assert data["stop_on_auto_reply"] is False
    listed = member_api.get("/api/v1/sequences/").json()
    assert [s["id"] for s in listed["results"]] == [data["id"]]
    assert listed["next"] is None
    assert member_api.get(f"/api/v1/sequences/{data['id']}/").json()["name"] == "Welcome"


def test_invalid_input_says_which_field(member_api, member_mailbox, admin):
    answer = member_api.post(
        "/api/v1/sequences/",
        _body(member_mailbox, steps=[{"subject": "{{ contact.shoe_size }}", "text": "x"}]),
        format="json",
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid"
    assert "shoe_size" in answer.json()["errors"]["steps"][0]
    no_steps = member_api.post("/api/v1/sequences/", _body(member_mailbox, steps=[]), format="json")
    assert no_steps.status_code == 400
    bad_zone = _body(member_mailbox)
    bad_zone["window"]["timezone"] = "Nowhere/Land"
    assert member_api.post("/api/v1/sequences/", bad_zone, format="json").json()["errors"] == {
        "timezone": ["Pick a time zone from the list (an IANA name such as Europe/Amsterdam)."]
    }
    ann_box = personal_mailbox(admin, "ann@acme.example.com")
    answer = member_api.post("/api/v1/sequences/", _body(ann_box), format="json")
    assert answer.status_code == 400
    assert "mailbox" in answer.json()["errors"]


def test_patch_permissions(member_api, member_mailbox, admin, other_member, outsider_api):
    sequence = member_api.post("/api/v1/sequences/", _body(member_mailbox), format="json").json()
    url = f"/api/v1/sequences/{sequence['id']}/"
    other = api_client_for(other_member)
    assert other.get(url).status_code == 200  # the account sees it
    answer = other.patch(url, {"name": "Mine"}, format="json")
    assert (answer.status_code, answer.json()["code"]) == (403, "permission_denied")
    assert outsider_api.get(url).status_code == 404
    assert outsider_api.patch(url, {"name": "x"}, format="json").status_code == 404
    answer = api_client_for(admin).patch(
        url, {"name": "Renamed", "stop_on_auto_reply": True}, format="json"
    )
    assert answer.status_code == 200
    assert (answer.json()["name"], answer.json()["stop_on_auto_reply"]) == ("Renamed", True)
    steps = member_api.patch(url, {"steps": [{"subject": "One", "text": "t"}]}, format="json")
    assert [s["subject"] for s in steps.json()["steps"]] == ["One"]


def test_enrol_and_manage(member_api, member_mailbox, contact, other_member, outsider_api):
    sequence = member_api.post("/api/v1/sequences/", _body(member_mailbox), format="json").json()
    url = f"/api/v1/sequences/{sequence['id']}/enrollments/"
    answer = member_api.post(url, {"contact": str(contact.pk)}, format="json")
    assert answer.status_code == 201
    enrollment = answer.json()
    assert set(enrollment) >= {
        "id",
        "sequence",
        "contact",
        "state",
        "stop_reason",
        "steps_sent",
        "next_step_at",
    }
    assert (enrollment["state"], enrollment["stop_reason"], enrollment["steps_sent"]) == (
        "active",
        None,
        0,
    )
    again = member_api.post(url, {"contact": str(contact.pk)}, format="json")
    assert (again.status_code, again.json()["code"]) == (409, "contact_in_sequence")
    assert [e["id"] for e in member_api.get(url).json()["results"]] == [enrollment["id"]]

    one = f"/api/v1/enrollments/{enrollment['id']}/"
    assert member_api.get(one).json()["state"] == "active"
    assert outsider_api.get(one).status_code == 404
    assert api_client_for(other_member).post(one + "pause/").status_code == 403
    paused = member_api.post(one + "pause/").json()
    assert (paused["state"], paused["next_step_at"]) == ("paused", None)
    resumed = member_api.post(one + "resume/").json()
    assert resumed["state"] == "active" and resumed["next_step_at"]
    stopped = member_api.post(one + "unenroll/").json()
    assert (stopped["state"], stopped["stop_reason"]) == ("stopped", "unenrolled")
    assert member_api.post(one + "resume/").json()["code"] == "invalid"


def test_enrol_many_answers_per_contact(member_api, member_mailbox, member, outsider):
    sequence = member_api.post("/api/v1/sequences/", _body(member_mailbox), format="json").json()
    url = f"/api/v1/sequences/{sequence['id']}/enrollments/"
    mine = [
        contact_create(account=member.account, email=f"p{n}@customer.example") for n in range(3)
    ]
    foreign = contact_create(account=outsider.account, email="x@elsewhere.example")
    member_api.post(url, {"contact": str(mine[0].pk)}, format="json")
    answer = member_api.post(
        url, {"contacts": [str(c.pk) for c in [*mine, foreign]]}, format="json"
    )
    assert answer.status_code == 200
    data = answer.json()
    assert (data["enrolled"], data["refused"]) == (2, 2)
    codes = [r["error"]["code"] if r["error"] else None for r in data["results"]]
    assert codes == ["contact_in_sequence", None, None, "not_found"]
    assert Enrollment.objects.count() == 3
    both = member_api.post(url, {"contact": str(mine[0].pk), "contacts": []}, format="json")
    assert both.status_code == 400


def test_another_accounts_sequences_and_enrolments_are_404(
    member_api, member_mailbox, contact, outsider_api, outsider
):
    sequence = member_api.post("/api/v1/sequences/", _body(member_mailbox), format="json").json()
    enrollment = member_api.post(
        f"/api/v1/sequences/{sequence['id']}/enrollments/",
        {"contact": str(contact.pk)},
        format="json",
    ).json()
    calls = [
        ("get", f"/api/v1/sequences/{sequence['id']}/", None),
        ("patch", f"/api/v1/sequences/{sequence['id']}/", {"name": "Mine"}),
        ("get", f"/api/v1/sequences/{sequence['id']}/enrollments/", None),
        ("post", f"/api/v1/sequences/{sequence['id']}/enrollments/", {"contact": str(contact.pk)}),
        ("get", f"/api/v1/enrollments/{enrollment['id']}/", None),
        ("post", f"/api/v1/enrollments/{enrollment['id']}/pause/", None),
        ("post", f"/api/v1/enrollments/{enrollment['id']}/resume/", None),
        ("post", f"/api/v1/enrollments/{enrollment['id']}/unenroll/", None),
    ]
    for method, url, body in calls:
        answer = getattr(outsider_api, method)(url, body, format="json")
        assert (answer.status_code, answer.json()["code"]) == (404, "not_found"), (method, url)
    assert outsider_api.get("/api/v1/sequences/").json()["results"] == []
    # Their own sequence cannot enrol our contact, nor send from our mailbox.
    their_box = personal_mailbox(outsider, "olga@globex.example.com")
    theirs = outsider_api.post("/api/v1/sequences/", _body(their_box), format="json").json()
    answer = outsider_api.post(
        f"/api/v1/sequences/{theirs['id']}/enrollments/",
        {"contact": str(contact.pk)},
        format="json",
    )
    assert answer.status_code == 404
    answer = outsider_api.patch(
        f"/api/v1/sequences/{theirs['id']}/", {"mailbox": str(member_mailbox.pk)}, format="json"
    )
    assert (answer.status_code, list(answer.json()["errors"])) == (400, ["mailbox"])
    assert Enrollment.objects.get().state == "active"
