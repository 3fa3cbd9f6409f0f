"""Key rotation of stored credentials (``manage.py rotate_credentials``)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from controlplane import crypto
from controlplane.models import Target

pytestmark = pytest.mark.django_db


def test_it_reencrypts_with_the_newest_key(policy, settings):
    old_key = settings.GATEHOUSE_FIELD_KEYS[0]
    new_key = Fernet.generate_key().decode()
    crypto._field_fernet.cache_clear()
    try:
        settings.GATEHOUSE_FIELD_KEYS = [new_key, old_key]
        call_command("rotate_credentials")
        stored = Target.objects.get(pk=policy.target.pk).credential_encrypted
        # Readable with the new key alone: the old one can now be dropped.
        assert Fernet(new_key).decrypt(stored.encode()) == b"upstream-secret-credential"
        settings.GATEHOUSE_FIELD_KEYS = [new_key]
        crypto._field_fernet.cache_clear()
        assert crypto.decrypt_field(stored) == "upstream-secret-credential"
    finally:
        crypto._field_fernet.cache_clear()
