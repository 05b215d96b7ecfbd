"""The CRM's page forms: writing an email to a contact, the R10 preferences."""

from __future__ import annotations

from typing import Any

from django import forms

from crm.compose import FONT_SIZE_MAX, FONT_SIZE_MIN, SAFE_FONTS
from inboxes.models import Mailbox, MailboxStatus

_WAITS_BECAUSE = {
    MailboxStatus.NEEDS_REAUTH: "sign in again in Settings › Email; email waits until then",
    MailboxStatus.ERROR: "has a problem: see Settings › Email; email waits until it is fixed",
}


def mailbox_label(mailbox: Mailbox) -> str:
    # Such a mailbox can still be picked: the email waits in the outbox until it is fixed.
    why = _WAITS_BECAUSE.get(MailboxStatus(mailbox.status))
    return f"{mailbox.address} ({why})" if why else mailbox.address


class ComposeForm(forms.Form):
    mailbox = forms.ChoiceField(label="From")
    subject = forms.CharField(
        max_length=998, error_messages={"required": "Write a subject before you send."}
    )
    body = forms.CharField(
        max_length=200_000,
        strip=False,
        widget=forms.Textarea,
        error_messages={"required": "Write your message before you send."},
    )
    log = forms.BooleanField(required=False, label="Log on the contact's timeline")
    track_opens = forms.BooleanField(required=False, label="Track opens")
    track_clicks = forms.BooleanField(required=False, label="Track clicks")

    def __init__(self, *args: Any, mailboxes: list[Mailbox], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mailboxes = {str(m.pk): m for m in mailboxes}
        field = self.fields["mailbox"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(key, mailbox_label(m)) for key, m in self.mailboxes.items()]

    def clean_body(self) -> str:
        body = str(self.cleaned_data["body"])
        if not body.strip():
            raise forms.ValidationError("Write your message before you send.")
        return body

    def chosen_mailbox(self) -> Mailbox:
        return self.mailboxes[self.cleaned_data["mailbox"]]


def font_choices(current: str) -> list[tuple[str, str]]:
    choices = [(family, family) for family in SAFE_FONTS]
    if current and current not in SAFE_FONTS:
        choices.append((current, f"{current} (set through the API)"))
    return choices


class PreferencesForm(forms.Form):
    log_sent_email = forms.BooleanField(required=False)
    track_opens = forms.BooleanField(required=False)
    track_clicks = forms.BooleanField(required=False)
    never_log = forms.CharField(required=False, max_length=100_000, widget=forms.Textarea)
    font_family = forms.ChoiceField(label="Font")
    font_size = forms.IntegerField(min_value=FONT_SIZE_MIN, max_value=FONT_SIZE_MAX, label="Size")

    def __init__(self, *args: Any, current_family: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.font_choices = font_choices(current_family)
        field = self.fields["font_family"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = self.font_choices

    def families(self) -> list[str]:
        return [value for value, _label in self.font_choices]

    def never_log_entries(self) -> list[str]:
        return [line for line in str(self.cleaned_data["never_log"]).splitlines() if line.strip()]
