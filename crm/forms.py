"""The contact pages' forms: they check the shape of the input; the rules are the
services' (crm/contacts.py, crm/imports.py)."""

from __future__ import annotations

from typing import Any

from django import forms

from accounts.models import User
from crm.selectors import account_users


class OwnerChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.display_name} ({obj.email})"


class ContactForm(forms.Form):
    email = forms.CharField(label="Email address", max_length=320)
    name = forms.CharField(max_length=200, required=False)
    company = forms.CharField(max_length=200, required=False)
    owner = OwnerChoice(queryset=User.objects.none(), required=False, empty_label="No owner")

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        owner = self.fields["owner"]
        assert isinstance(owner, OwnerChoice)
        owner.queryset = account_users(user)


class NoteForm(forms.Form):
    text = forms.CharField(
        label="Note", max_length=50_000, widget=forms.Textarea(attrs={"rows": 3})
    )


class ImportForm(forms.Form):
    file = forms.FileField(label="CSV file", allow_empty_file=True)
