"""Key rotation for mailbox secrets (``manage.py rotate_encryption_keys``).

Other secrets sealed with the same keys (the meetings tool's CalDAV passwords) are
rotated by the function their app registers here (``register_secret_rotator``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction

from inboxes.credentials import (
    SecretDecryptionError,
    decrypt_secrets,
    encrypt_secrets,
    is_current,
)
from inboxes.models import Mailbox


@dataclass
class RotationResult:
    rotated: int = 0
    current: int = 0
    unreadable: list[str] = field(default_factory=list)


_rotators: list[Callable[[RotationResult], None]] = []


def register_secret_rotator(rotator: Callable[[RotationResult], None]) -> None:
    """``rotator(result)`` re-encrypts its own secrets under the first key and counts
    them in ``result`` (rotated, current, unreadable ids)."""
    if rotator not in _rotators:
        _rotators.append(rotator)


def secrets_rotate(batch_size: int = 500) -> RotationResult:
    result = RotationResult()
    for rotator in _rotators:
        rotator(result)
    ids = list(
        Mailbox.objects.filter(secrets_ciphertext__isnull=False).values_list("pk", flat=True)
    )
    for start in range(0, len(ids), batch_size):
        with transaction.atomic():
            # Row locks: a worker refreshing a token at the same time must not have
            # its new token overwritten by the old one we decrypted.
            mailboxes = Mailbox.objects.select_for_update().filter(
                pk__in=ids[start : start + batch_size]
            )
            for mailbox in mailboxes:
                blob = mailbox.secrets_ciphertext
                if not blob:
                    continue
                if is_current(blob):
                    result.current += 1
                    continue
                ids_kw = {"account_id": mailbox.account_id, "mailbox_id": mailbox.pk}
                try:
                    secrets = decrypt_secrets(blob, **ids_kw)
                except SecretDecryptionError:
                    result.unreadable.append(str(mailbox.pk))
                    continue
                mailbox.secrets_ciphertext = encrypt_secrets(secrets, **ids_kw)
                mailbox.save(update_fields=["secrets_ciphertext"])
                result.rotated += 1
    return result
