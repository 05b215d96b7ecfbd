import base64
import os

import pytest
from django.core.management import call_command

from inboxes.credentials import (
    SecretDecryptionError,
    decrypt_secrets,
    encrypt_secrets,
    mailbox_secrets,
)
from inboxes.models import Mailbox


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def make_mailbox(user, address="ann@acme.example.com", secrets=None) -> Mailbox:
    mailbox = Mailbox(
        account=user.account,
        owner=user,
        kind="personal",
        address=address,
        canonical_address=address.lower(),
        imap_host="imap.example.com",
        imap_port=993,
        imap_security="ssl",
        imap_username=address,
    )
    mailbox.secrets_ciphertext = encrypt_secrets(
        secrets or {"imap_password": "s3cret-imap", "smtp_password": "s3cret-smtp"},
        account_id=mailbox.account_id,
        mailbox_id=mailbox.pk,
    )
    mailbox.save()
    return mailbox


def test_secrets_round_trip_and_are_not_stored_in_clear(admin):
    mailbox = make_mailbox(admin)
    stored = bytes(Mailbox.objects.get(pk=mailbox.pk).secrets_ciphertext)
    assert b"s3cret" not in stored
    assert mailbox_secrets(Mailbox.objects.get(pk=mailbox.pk))["imap_password"] == "s3cret-imap"


def test_a_ciphertext_copied_onto_another_mailbox_does_not_decrypt(admin, member, outsider):
    ann = make_mailbox(admin)
    bo = make_mailbox(member, address="bo@acme.example.com", secrets={"imap_password": "bo"})
    olga = make_mailbox(outsider, address="olga@globex.example.com", secrets={"imap_password": "o"})
    # Given someone with write access to the database swaps ciphertexts between rows
    Mailbox.objects.filter(pk=bo.pk).update(secrets_ciphertext=ann.secrets_ciphertext)
    Mailbox.objects.filter(pk=olga.pk).update(secrets_ciphertext=ann.secrets_ciphertext)
    # Then neither the other mailbox of the account nor another account can read it
    for victim in (bo, olga):
        with pytest.raises(SecretDecryptionError):
            mailbox_secrets(Mailbox.objects.get(pk=victim.pk))
    assert mailbox_secrets(Mailbox.objects.get(pk=ann.pk))["imap_password"] == "s3cret-imap"


def test_tampered_bytes_do_not_decrypt(admin):
    mailbox = make_mailbox(admin)
    blob = bytearray(mailbox.secrets_ciphertext)
    blob[-1] ^= 1
    with pytest.raises(SecretDecryptionError):
        decrypt_secrets(bytes(blob), account_id=mailbox.account_id, mailbox_id=mailbox.pk)


def test_rotation_re_encrypts_under_the_newest_key_and_the_old_key_can_go(
    admin, member, settings, capsys
):
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    first = make_mailbox(admin)
    second = make_mailbox(member, address="bo@acme.example.com", secrets={"imap_password": "bo-pw"})
    before = bytes(first.secrets_ciphertext)

    # Given a new key put first, the old one still listed for decryption
    settings.FIELD_ENCRYPTION_KEYS = [new_key(), old_key]
    call_command("rotate_encryption_keys")
    assert "re-encrypted: 2" in capsys.readouterr().out

    # When the old key is removed
    settings.FIELD_ENCRYPTION_KEYS = settings.FIELD_ENCRYPTION_KEYS[:1]
    # Then every secret still reads, and the stored bytes changed
    assert mailbox_secrets(Mailbox.objects.get(pk=first.pk))["imap_password"] == "s3cret-imap"
    assert mailbox_secrets(Mailbox.objects.get(pk=second.pk))["imap_password"] == "bo-pw"
    assert bytes(Mailbox.objects.get(pk=first.pk).secrets_ciphertext) != before
    # And a second run has nothing left to do
    call_command("rotate_encryption_keys")
    assert "re-encrypted: 0, already current: 2" in capsys.readouterr().out


def test_a_secret_under_a_removed_key_is_reported_not_lost_silently(admin, settings):
    mailbox = make_mailbox(admin)
    settings.FIELD_ENCRYPTION_KEYS = [new_key()]
    with pytest.raises(SecretDecryptionError, match="no longer configured"):
        mailbox_secrets(Mailbox.objects.get(pk=mailbox.pk))
    with pytest.raises(SystemExit):
        call_command("rotate_encryption_keys")
