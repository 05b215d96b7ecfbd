"""The Sequences pages: list with stats, create/edit with steps added and removed,
the detail with its enrolments and their buttons, and the enrol endpoint."""

from __future__ import annotations

import pytest
from django.test import Client

from crm.contacts import contact_create
from crm.enrollments import enrollment_create
from crm.models import Enrollment, EnrollmentState, Sequence, StopReason

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _form(mailbox, **extra):
    data = {
        "name": "Trial follow-up",
        "mailbox": str(mailbox.pk),
        "window_start": "09:00",
        "window_end": "17:00",
        "timezone": "Europe/Amsterdam",
        "business_days_only": "on",
        "step_count": "2",
        "step-0-subject": 'Hi {{ contact.first_name | default: "there" }}',
        "step-0-text": "Welcome",
        "step-0-delay_days": "0",
        "step-1-subject": "",
        "step-1-text": "Any questions?",
        "step-1-delay_days": "3",
        "action": "save",
    }
    data.update(extra)
    return data


def test_nav_and_empty_list(member):
    page = client_for(member).get("/sequences/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/sequences/" class="active" aria-current="page">Sequences</a>' in html
    assert 'id="no-sequences"' in html


def test_create_adds_and_removes_steps_then_saves(member, member_mailbox):
    client = client_for(member)
    form = client.get("/sequences/new/").content.decode()
    assert '{{ contact.first_name | default: "there" }}' in form  # explained
    assert "Europe/Amsterdam" in form
    added = client.post("/sequences/new/", _form(member_mailbox, action="add_step"))
    assert added.status_code == 200
    assert 'name="step-2-subject"' in added.content.decode()
    removed = client.post(
        "/sequences/new/", _form(member_mailbox, step_count="3", action="remove_step_1")
    )
    assert 'name="step-1-subject"' in removed.content.decode()
    assert 'name="step-2-subject"' not in removed.content.decode()
    assert not Sequence.objects.exists()
    saved = client.post("/sequences/new/", _form(member_mailbox))
    sequence = Sequence.objects.get()
    assert saved.status_code == 302 and saved["Location"] == f"/sequences/{sequence.pk}/"
    assert [s.delay_days for s in sequence.steps.order_by("position")] == [0, 3]
    assert sequence.timezone == "Europe/Amsterdam"
    listed = client.get("/sequences/").content.decode()
    assert "Trial follow-up" in listed and 'data-label="Enrolled">0<' in listed


def test_errors_say_what_to_do(member, member_mailbox):
    page = client_for(member).post(
        "/sequences/new/",
        _form(member_mailbox, **{"step-0-subject": "{{ contact.phone }}", "window_end": "08:00"}),
    )
    assert page.status_code == 400
    html = page.content.decode()
    assert "Unknown variable &#x27;contact.phone&#x27;" in html
    assert "starts before it ends" in html
    assert 'value="Any questions?"' not in html  # textarea keeps it as content
    assert "Any questions?" in html


def test_only_owner_or_admin_edits(member, member_mailbox, other_member, admin):
    client_for(member).post("/sequences/new/", _form(member_mailbox))
    sequence = Sequence.objects.get()
    other = client_for(other_member)
    assert other.get(f"/sequences/{sequence.pk}/").status_code == 200
    assert (
        f'href="/sequences/{sequence.pk}/edit/"'
        not in other.get(f"/sequences/{sequence.pk}/").content.decode()
    )
    refused = other.post(f"/sequences/{sequence.pk}/edit/", _form(member_mailbox, name="Mine"))
    assert refused.status_code == 302
    sequence.refresh_from_db()
    assert sequence.name == "Trial follow-up"
    edited = client_for(admin).post(
        f"/sequences/{sequence.pk}/edit/", _form(member_mailbox, name="Renamed")
    )
    assert edited.status_code == 302
    sequence.refresh_from_db()
    assert sequence.name == "Renamed"


def test_detail_buttons_pause_resume_unenroll(member, sequence, contacts):
    enrollment = enrollment_create(actor=member, sequence=sequence, contact=contacts[0])
    client = client_for(member)
    page = client.get(f"/sequences/{sequence.pk}/").content.decode()
    assert "Carol0 Jones" in page and ">Pause</button>" in page
    assert "<summary>Unenroll…</summary>" in page and "Yes, unenroll" in page  # asks first
    client.post(f"/sequences/enrollments/{enrollment.pk}/pause/")
    enrollment.refresh_from_db()
    assert enrollment.state == EnrollmentState.PAUSED
    assert ">Resume</button>" in client.get(f"/sequences/{sequence.pk}/").content.decode()
    client.post(f"/sequences/enrollments/{enrollment.pk}/resume/")
    client.post(f"/sequences/enrollments/{enrollment.pk}/unenroll/")
    enrollment.refresh_from_db()
    assert (enrollment.state, enrollment.stop_reason) == (
        EnrollmentState.STOPPED,
        StopReason.UNENROLLED,
    )


def test_enroll_from_a_contacts_selection(member, sequence, contacts, outsider):
    enrollment_create(actor=member, sequence=sequence, contact=contacts[0])
    foreign = contact_create(account=outsider.account, email="z@elsewhere.example")
    client = client_for(member)
    answer = client.post(
        "/sequences/enroll/",
        {
            "sequence": str(sequence.pk),
            "contacts": [str(c.pk) for c in [*contacts, foreign]],
            "next": "/sequences/",
        },
        follow=True,
    )
    assert answer.redirect_chain[-1][0] == "/sequences/"
    html = answer.content.decode()
    assert "2 contacts enrolled in Follow up." in html
    assert "Already in a sequence (unenrol them there first): Carol0 Jones." in html
    assert Enrollment.objects.filter(contact=foreign).count() == 0
    assert Enrollment.objects.count() == 3
    no_sequence = client.post(
        "/sequences/enroll/", {"contacts": [str(contacts[1].pk)]}, follow=True
    )
    assert "Pick a sequence" in no_sequence.content.decode()
