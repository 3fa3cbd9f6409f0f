"""``manage.py policy_import FILE [--dry-run] [--prune]``: validate, diff and apply YAML.

Exit status: 0 when applied (or, with ``--dry-run``, when valid), 1 when the document
has errors (each printed with its line and field; nothing is written).
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from controlplane.policy_yaml import plan_import


class Command(BaseCommand):
    help = "Import a policy YAML file: validate, show the diff, apply in one transaction."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="YAML file, or - for standard input")
        parser.add_argument("--dry-run", action="store_true", help="show the diff only")
        parser.add_argument(
            "--prune", action="store_true", help="delete objects that are not in the file"
        )

    def handle(self, *args, file: str, dry_run: bool, prune: bool, **options) -> None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CommandError(f"cannot read {file}: {e}") from e
        plan = plan_import(text, prune=prune)
        if not plan.ok:
            for issue in plan.issues:
                self.stderr.write(f"{file}: {issue}")
            raise CommandError(f"{len(plan.issues)} error(s); nothing was applied", returncode=1)
        self.stdout.write(plan.diff())
        if dry_run:
            self.stdout.write("Dry run: nothing was applied.")
            return
        applied = plan.apply()
        self.stdout.write(f"Applied {len(applied)} change(s).")
