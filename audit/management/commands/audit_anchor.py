"""``manage.py audit_anchor``: sign the current chain head now (beat does it periodically)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit.chain import acting_as, anchor, signing_key


class Command(BaseCommand):
    help = "Append a signed anchor over the audit chain's head."

    def handle(self, *args, **options) -> None:
        if signing_key() is None:
            raise CommandError("GATEHOUSE_AUDIT_SIGNING_KEY is not set")
        with acting_as("system:audit_anchor"):
            rec = anchor()
        self.stdout.write(f"anchor #{rec.seq}" if rec else "nothing new to anchor")
