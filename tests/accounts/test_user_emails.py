"""A login email is unique across every account, so creating a user must not tell
one account's admin that an address has a login in another account."""

import pytest

from accounts.models import User
from tests.support.factories import PASSWORD

pytestmark = pytest.mark.django_db


def create_user(api, email):
    return api.post(
        "/api/v1/users/",
        {"email": email, "full_name": "New Person", "role": "member", "password": PASSWORD},
        format="json",
    )


def test_an_address_with_a_login_in_another_account_is_refused_without_saying_so(
    admin_api, member, outsider
):
    elsewhere = create_user(admin_api, outsider.email.upper())
    here = create_user(admin_api, member.email)  # taken, but in the admin's own account
    assert elsewhere.status_code == here.status_code == 400
    assert elsewhere.json() == here.json()
    assert elsewhere.json()["code"] == "invalid"
    text = str(elsewhere.json()).lower()
    assert "can't be used" in text
    for hint in (outsider.email, "globex", "already", "exists", "another account", "login"):
        assert hint not in text
    assert User.objects.filter(email=outsider.email).count() == 1


def test_the_users_page_refuses_another_accounts_address_in_the_same_words(
    client, admin, member, outsider
):
    client.force_login(admin)

    def submit(email):
        response = client.post(
            "/settings/users/new/",
            {"email": email, "full_name": "New Person", "role": "member", "password": PASSWORD},
        )
        assert response.status_code == 400
        return [str(error) for error in response.context["form"].errors["email"]]

    elsewhere = submit(outsider.email)
    assert elsewhere == submit(member.email)
    assert "can't be used" in " ".join(elsewhere)
    assert "Globex" not in " ".join(elsewhere)
