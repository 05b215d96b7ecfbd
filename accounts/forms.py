from typing import Any

from django import forms
from django.contrib.auth.forms import PasswordResetForm

from accounts.models import Role


class UserCreateForm(forms.Form):
    email = forms.EmailField(max_length=254)
    full_name = forms.CharField(max_length=200, required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
    password = forms.CharField(widget=forms.PasswordInput, strip=False, max_length=1024)


class UserInviteForm(forms.Form):
    email = forms.EmailField(max_length=254)
    full_name = forms.CharField(max_length=200, required=False)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class UserEditForm(forms.Form):
    full_name = forms.CharField(max_length=200, required=False)
    role = forms.ChoiceField(choices=Role.choices)


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100)


class ProductPasswordResetForm(PasswordResetForm):
    """Django's "forgot password" form, mailing through the product's own mail."""

    def save(self, *args: Any, **kwargs: Any) -> None:
        from accounts.invites import password_reset_request

        password_reset_request(email=self.cleaned_data["email"])
