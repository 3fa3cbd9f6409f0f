"""``manage.py policy_export [-o FILE]``: write the whole policy as YAML (no secrets)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand

from controlplane.policy_yaml import export_yaml


class Command(BaseCommand):
    help = "Export targets, agents, groups and rules as YAML (credentials and tokens omitted)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("-o", "--output", help="file to write; standard output if omitted")

    def handle(self, *args, output: str | None = None, **options) -> None:
        text = export_yaml()
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"policy written to {output}")
        else:
            self.stdout.write(text, ending="")
