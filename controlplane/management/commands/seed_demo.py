"""``manage.py seed_demo``: the demo's roles, people, targets, agent and rules (idempotent).

Run again, it updates what exists instead of duplicating it, keeps the agent's token
when ``--token-file`` still holds a usable one, and publishes the policy snapshot.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from controlplane.models import AccessRule, Agent, AgentToken, MaskingRule, Target
from controlplane.roles import ADMIN, APPROVER, AUDITOR, ROLES, ensure_roles
from controlplane.snapshot import publish_snapshot
from proxy_worker.policy import hash_token

DEMO_USERS = {  # username: roles
    "admin": [ADMIN],
    "approver": [APPROVER],
    "approver2": [APPROVER],
    "auditor": [AUDITOR],
}


class Command(BaseCommand):
    help = "Create or update the demo users, targets, agent, masking and access rules."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--password", default=os.environ.get("GATEHOUSE_DEMO_PASSWORD", "gatehouse-demo")
        )
        parser.add_argument(
            "--datasette-url", default=os.environ.get("DEMO_DATASETTE_URL", "http://127.0.0.1:8101")
        )
        parser.add_argument("--datasette-token", default=os.environ.get("DEMO_DATASETTE_TOKEN", ""))
        parser.add_argument(
            "--llm-url", default=os.environ.get("DEMO_LLM_URL", "http://127.0.0.1:8102")
        )
        parser.add_argument("--llm-key", default=os.environ.get("DEMO_LLM_API_KEY", ""))
        parser.add_argument(
            "--mcp-url",
            default=os.environ.get("DEMO_MCP_URL", "http://127.0.0.1:8103"),
            help="Base URL of the demo's MCP tool server (target crm-tools)",
        )
        parser.add_argument("--mcp-token", default=os.environ.get("DEMO_MCP_TOKEN", ""))
        parser.add_argument(
            "--pg-host",
            default=os.environ.get("GATEHOUSE_DB_HOST", "127.0.0.1"),
            help="Host of the demo's PostgreSQL customers database (target customers-db)",
        )
        parser.add_argument(
            "--pg-port", type=int, default=int(os.environ.get("GATEHOUSE_DB_PORT", "5432"))
        )
        parser.add_argument(
            "--pg-database", default=os.environ.get("DEMO_PG_DATABASE", "gatehouse_demo_customers")
        )
        parser.add_argument(
            "--pg-user", default=os.environ.get("DEMO_PG_USER", "gatehouse_demo_reader")
        )
        parser.add_argument("--pg-password", default=os.environ.get("DEMO_PG_PASSWORD", ""))
        parser.add_argument(
            "--approval-timeout",
            type=int,
            default=int(os.environ.get("GATEHOUSE_APPROVAL_TIMEOUT", "120")),
        )
        parser.add_argument(
            "--token-file",
            type=Path,
            default=None,
            help="Where the demo agent's token is kept (created 0600)",
        )

    def handle(
        self,
        *args,
        password: str,
        datasette_url: str,
        datasette_token: str,
        llm_url: str,
        llm_key: str,
        mcp_url: str,
        mcp_token: str,
        pg_host: str,
        pg_port: int,
        pg_database: str,
        pg_user: str,
        pg_password: str,
        approval_timeout: int,
        token_file: Path | None,
        **options,
    ) -> None:
        with transaction.atomic():
            ensure_roles()
            groups = {name: Group.objects.get(name=name) for name in ROLES}
            users = {}
            user_model = get_user_model()
            for username, roles in DEMO_USERS.items():
                user, _ = user_model.objects.get_or_create(username=username)
                user.set_password(password)
                user.is_staff = ADMIN in roles  # Django admin, with the admin group's perms
                user.is_superuser = False  # roles come from groups only
                user.save()
                user.groups.set([groups[r] for r in roles])
                users[username] = user

            customers, _ = Target.objects.update_or_create(
                slug="customers",
                defaults={
                    "name": "Customer database (datasette)",
                    "upstream_url": datasette_url,
                    "auth_header": "Authorization",
                    "auth_scheme": "Bearer",
                    "approval_timeout": approval_timeout,
                    "default_action": "allow",
                },
            )
            if datasette_token:
                customers.set_credential(datasette_token)
                customers.save()
            llm, _ = Target.objects.update_or_create(
                slug="llm",
                defaults={
                    "name": "LLM (OpenAI-compatible)",
                    "upstream_url": llm_url,
                    "auth_header": "Authorization",
                    "auth_scheme": "Bearer",
                    "approval_timeout": approval_timeout,
                    "default_action": "allow",
                },
            )
            if llm_key:
                llm.set_credential(llm_key)
                llm.save()

            crm_tools, _ = Target.objects.update_or_create(
                slug="crm-tools",
                defaults={
                    "name": "CRM tools (MCP server)",
                    "kind": "mcp",
                    "upstream_url": mcp_url,
                    "auth_header": "Authorization",
                    "auth_scheme": "Bearer",
                    "approval_timeout": approval_timeout,
                    "default_action": "allow",
                    "mcp_block_changed_tools": True,
                    "mcp_allow_server_requests": False,
                },
            )
            if mcp_token:
                crm_tools.set_credential(mcp_token)
                crm_tools.save()

            customers_db, _ = Target.objects.update_or_create(
                slug="customers-db",
                defaults={
                    "name": "Customer database (PostgreSQL)",
                    "kind": "postgres",
                    "upstream_url": "",
                    "auth_header": "",
                    "auth_scheme": "",
                    "pg_host": pg_host,
                    "pg_port": pg_port,
                    "pg_database": pg_database,
                    "pg_user": pg_user,
                    "pg_sslmode": "prefer",
                    "approval_timeout": approval_timeout,
                    "default_action": "allow",
                },
            )
            if pg_password:
                customers_db.set_credential(pg_password)
                customers_db.save()

            agent, _ = Agent.objects.update_or_create(
                name="demo-agent",
                defaults={
                    "description": "The demo agent (Agents SDK, httpx, openai SDK, psycopg)",
                    "owner": users["admin"],
                },
            )

            rule, _ = MaskingRule.objects.update_or_create(
                name="Personal data",
                defaults={
                    "entity_types": ["EMAIL", "PHONE", "US_SSN", "CREDIT_CARD", "IBAN"],
                    "strategy": "redact",
                    "direction": "both",
                },
            )
            rule.targets.clear()
            names, _ = MaskingRule.objects.update_or_create(
                name="Customer names and addresses",
                defaults={
                    "field_names": ["name", "address"],
                    "strategy": "redact",
                    "direction": "response",
                },
            )
            names.targets.set([customers_db, crm_tools])

            AccessRule.objects.update_or_create(
                name="No schema discovery",
                defaults={
                    "position": 10,
                    "target": customers,
                    "query_pattern": r"(?i)sqlite_master",
                    "action": "deny",
                    "reason": "Agents may not enumerate the database schema.",
                },
            )
            AccessRule.objects.update_or_create(
                name="Read-only customer data",
                defaults={
                    "position": 20,
                    "target": customers,
                    "methods": ["POST", "PUT", "PATCH", "DELETE"],
                    "action": "deny",
                    "reason": "The customer database is read-only for agents.",
                },
            )
            AccessRule.objects.update_or_create(
                name="Bulk export needs approval",
                defaults={
                    "position": 30,
                    "target": customers,
                    "path_pattern": "/customers.json",
                    "query_pattern": r"(?i)(^|&)sql=(?![^&]*\blimit\b)",
                    "action": "approve",
                    "approval_timeout": approval_timeout,
                    "reason": "A SQL query without LIMIT exports the whole customer table.",
                },
            )

            AccessRule.objects.update_or_create(
                name="No unfiltered writes",
                defaults={
                    "position": 40,
                    "target": customers_db,
                    "statement_kinds": ["UPDATE", "DELETE"],
                    "without_where": True,
                    "action": "deny",
                    "reason": "UPDATE and DELETE without WHERE touch every row.",
                },
            )
            AccessRule.objects.update_or_create(
                name="Bulk customer reads need approval",
                defaults={
                    "position": 50,
                    "target": customers_db,
                    "statement_kinds": ["SELECT"],
                    "tables": ["customers", "customer_contacts"],
                    "without_limit": True,
                    "action": "approve",
                    "approval_timeout": approval_timeout,
                    "reason": "A SELECT without LIMIT reads the whole customer table.",
                },
            )

            AccessRule.objects.update_or_create(
                name="No bulk customer export",
                defaults={
                    "position": 60,
                    "target": crm_tools,
                    "mcp_methods": ["tools/call"],
                    "tool_names": ["export_*"],
                    "action": "deny",
                    "reason": "Agents may not export the whole customer base.",
                },
            )
            AccessRule.objects.update_or_create(
                name="Customer deletion needs approval",
                defaults={
                    "position": 70,
                    "target": crm_tools,
                    "mcp_methods": ["tools/call"],
                    "tool_names": ["delete_customer"],
                    "action": "approve",
                    "approval_timeout": approval_timeout,
                    "reason": "Deleting a customer cannot be undone.",
                },
            )

            token = None
            if token_file and token_file.exists():
                candidate = token_file.read_text().strip()
                if (
                    AgentToken.objects.usable()
                    .filter(agent=agent, token_hash=hash_token(candidate))
                    .exists()
                ):
                    token = candidate
            if token is None:
                _, token = AgentToken.issue(agent)
                if token_file:
                    token_file.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(token + "\n")
                if not token_file:
                    self.stdout.write(f"demo-agent token (shown once): {token}")
        version = publish_snapshot()
        self.stdout.write(self.style.SUCCESS(f"demo seeded; policy version {version}"))
