from typing import Any

from django import forms


class InboxCreateForm(forms.Form):
    name = forms.CharField(max_length=200, label="Inbox name")


class InboxSettingsForm(forms.Form):
    from_name = forms.CharField(max_length=200, required=False, label="From name")


class NewEmailForm(forms.Form):
    """New email from a conversations inbox (conversations/outbound.py checks it all)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    inbox = forms.UUIDField(label="From")
    to = forms.CharField(
        max_length=5000,
        label="To",
        help_text="One or more addresses, separated by commas.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "inputmode": "email"}),
    )
    cc = forms.CharField(
        max_length=5000,
        required=False,
        label="Cc",
        widget=forms.TextInput(attrs={"autocomplete": "off", "inputmode": "email"}),
    )
    subject = forms.CharField(max_length=998, label="Subject")
    text = forms.CharField(
        max_length=200_000, label="Message", widget=forms.Textarea(attrs={"rows": 10})
    )


def address_list(value: str) -> list[str]:
    """ "a@x.com, b@y.com; c@z.com" -> the addresses, in order."""
    return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
