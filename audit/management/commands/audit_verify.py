"""``manage.py audit_verify``: verify the audit hash chain; exit 1 at the first broken record."""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand

from audit.chain import verify_chain


class Command(BaseCommand):
    help = "Verify the audit chain (hashes, links, exchange digests, signed anchors)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print the result as JSON"
        )
        parser.add_argument("--chunk", type=int, default=5000, help="Records read at a time")

    def handle(self, *args, as_json: bool = False, chunk: int = 5000, **options) -> None:
        def progress(done: int, total: int) -> None:
            if not as_json and self.stderr.isatty():
                self.stderr.write(f"\r{done}/{total}", ending="")

        result = verify_chain(chunk=chunk, progress=progress)
        if as_json:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
        elif result.ok:
            self.stdout.write(
                f"chain OK: {result.records} records, {result.exchanges} exchanges "
                f"({result.purged} purged by retention), {result.anchors} signed anchors, "
                f"head #{result.head_seq}"
            )
        else:
            self.stdout.write(f"chain BROKEN at record #{result.first_bad_seq}")
            for seq, reason in result.problems:
                self.stdout.write(f"  #{seq}: {reason}" if seq else f"  {reason}")
        if not result.ok:
            sys.exit(1)
