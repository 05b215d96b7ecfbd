from django import forms

from core.errors import Invalid
from inboxes.addresses import canonical_address
from inboxes.history import DEFAULT_BACKFILL_DAYS, backfill_choices, backfill_from_form
from inboxes.models import MailboxKind, Security
from inboxes.services import ServerInput

SECURITY_CHOICES = Security.choices


class MailboxConnectForm(forms.Form):
    """IMAP and SMTP settings for connecting a mailbox from the settings pages."""

    address = forms.CharField(max_length=320, label="Email address")
    imap_host = forms.CharField(max_length=255, label="IMAP server")
    imap_port = forms.IntegerField(min_value=1, max_value=65535, initial=993, label="IMAP port")
    imap_security = forms.ChoiceField(
        choices=SECURITY_CHOICES, initial="ssl", label="IMAP security"
    )
    imap_username = forms.CharField(max_length=320, label="IMAP user name")
    imap_password = forms.CharField(
        widget=forms.PasswordInput, max_length=1024, strip=False, label="IMAP password"
    )
    smtp_host = forms.CharField(max_length=255, label="SMTP server")
    smtp_port = forms.IntegerField(min_value=1, max_value=65535, initial=587, label="SMTP port")
    smtp_security = forms.ChoiceField(
        choices=SECURITY_CHOICES, initial="starttls", label="SMTP security"
    )
    smtp_username = forms.CharField(max_length=320, label="SMTP user name")
    smtp_password = forms.CharField(
        widget=forms.PasswordInput, max_length=1024, strip=False, label="SMTP password"
    )
    backfill_days = forms.ChoiceField(
        choices=backfill_choices(),
        initial=str(DEFAULT_BACKFILL_DAYS),
        required=False,  # left out: the default window
        label="Import",
    )

    def clean_address(self) -> str:
        """A malformed address is a field error here, before any connection test
        (so it never counts as a failed test)."""
        address = self.cleaned_data["address"].strip()
        try:
            canonical_address(address)
        except Invalid as exc:
            raise forms.ValidationError(exc.extra["errors"].get("address") or exc.detail) from exc
        return address

    def clean_backfill_days(self) -> int | None:
        """Days of history to import (None: all mail)."""
        try:
            return backfill_from_form(self.cleaned_data.get("backfill_days"))
        except Invalid as exc:
            raise forms.ValidationError(exc.detail) from exc

    def servers(self) -> tuple[ServerInput, ServerInput]:
        data = self.cleaned_data
        return tuple(  # type: ignore[return-value]
            ServerInput(
                host=data[f"{p}_host"],
                port=data[f"{p}_port"],
                security=data[f"{p}_security"],
                username=data[f"{p}_username"],
                password=data[f"{p}_password"],
            )
            for p in ("imap", "smtp")
        )


class TeamMailboxConnectForm(MailboxConnectForm):
    acknowledge_team_visibility = forms.BooleanField(
        required=False,
        label="I understand that all incoming mail to this address is visible to the whole team, "
        "and this address is not used for private mail.",
    )


class AddressCheckForm(forms.Form):
    address = forms.CharField(max_length=320)
    kind = forms.ChoiceField(choices=MailboxKind.choices)
