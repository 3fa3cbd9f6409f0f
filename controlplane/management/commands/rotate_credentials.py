"""``manage.py rotate_credentials``: re-encrypt every stored target credential with the
newest key in ``GATEHOUSE_FIELD_KEYS``.

Rotation: prepend a new Fernet key to ``GATEHOUSE_FIELD_KEYS`` (decryption still works
with the old ones), run this command, then drop the old key. Plaintext never leaves
memory; the policy snapshot is republished once at the end.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from controlplane.crypto import rotate_field
from controlplane.models import Target


class Command(BaseCommand):
    help = "Re-encrypt stored target credentials with the newest GATEHOUSE_FIELD_KEYS key."

    def handle(self, *args, **options) -> None:
        n = 0
        with transaction.atomic():
            for target in Target.objects.select_for_update().exclude(credential_encrypted=""):
                target.credential_encrypted = rotate_field(target.credential_encrypted)
                target.save(update_fields=["credential_encrypted"])
                n += 1
        self.stdout.write(f"re-encrypted {n} credential(s) with the newest key")
