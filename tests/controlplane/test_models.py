"""Model validation of PostgreSQL targets and SQL access rules (``full_clean``)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.exceptions import ValidationError

from controlplane.models import AccessRule, Target

pytestmark = pytest.mark.django_db


def ca_pem(name: str = "Test CA") -> str:
    """A self-signed CA certificate in PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def pg_target(**kw) -> Target:
    fields = {
        "name": "Orders",
        "slug": "orders",
        "kind": "postgres",
        "pg_host": "db.internal",
        "pg_database": "orders",
        "pg_user": "gatehouse",
        **kw,
    }
    return Target(**fields)


def errors_of(obj) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as e:
        obj.full_clean()
    return e.value.message_dict


# -- targets ------------------------------------------------------------------------------


def test_a_postgres_target_needs_no_url_and_shows_a_connection_uri():
    t = pg_target()
    t.full_clean()
    assert t.upstream_url == "" and t.pg_port == 5432 and t.pg_sslmode == "prefer"
    assert not t.pg_allow_plaintext
    assert t.upstream_display == "postgresql://gatehouse@db.internal:5432/orders"
    v6 = pg_target(pg_host="fd00::5", pg_port=6543, pg_user="a@b", pg_database="x y")
    assert v6.upstream_display == "postgresql://a%40b@[fd00::5]:6543/x%20y"


def test_an_http_target_needs_an_upstream_url_and_ignores_postgres_fields():
    errors = errors_of(Target(name="A", slug="a"))
    assert errors["upstream_url"] == ["an HTTP target needs an upstream URL"]
    t = Target(name="A", slug="a", upstream_url="https://a.example", pg_host="leftover")
    t.full_clean()
    assert t.upstream_display == "https://a.example"


@pytest.mark.parametrize(
    "missing, what", [("pg_host", "host"), ("pg_database", "database"), ("pg_user", "user")]
)
def test_a_postgres_target_needs_host_database_and_user(missing, what):
    errors = errors_of(pg_target(**{missing: ""}))
    assert errors[missing] == [f"a PostgreSQL target needs a {what}"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("pg_host", "db.internal:5432/x"),
        ("pg_host", "user@db"),
        ("pg_host", "db internal"),
        ("pg_port", 0),
        ("pg_port", 65536),
        ("pg_database", "x" * 64),
        ("pg_user", "bad\nname"),
        ("pg_sslmode", "sometimes"),
        ("kind", "ftp"),
    ],
)
def test_bad_postgres_values_are_refused(field, value):
    assert field in errors_of(pg_target(**{field: value}))


@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full"])
def test_a_ca_bundle_is_validated_and_used_with_verify_modes(sslmode):
    bundle = ca_pem("one") + ca_pem("two")
    pg_target(pg_sslmode=sslmode, pg_ca_pem=bundle).full_clean()
    pg_target(pg_sslmode=sslmode).full_clean()  # empty: the system trust store


@pytest.mark.parametrize(
    "text",
    [
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
def test_a_bad_ca_bundle_is_refused(text):
    errors = errors_of(pg_target(pg_sslmode="verify-full", pg_ca_pem=text))
    assert "not a PEM certificate bundle" in errors["pg_ca_pem"][0]


@pytest.mark.parametrize("sslmode", ["disable", "prefer", "require"])
def test_a_ca_bundle_without_verification_is_refused(sslmode):
    errors = errors_of(pg_target(pg_sslmode=sslmode, pg_ca_pem=ca_pem()))
    assert "only used with verify-ca or verify-full" in errors["pg_ca_pem"][0]


# -- access rules -------------------------------------------------------------------------


@pytest.fixture
def targets(db):
    web = Target.objects.create(name="Web", slug="web", upstream_url="https://web.example")
    pg = pg_target()
    pg.save()
    return web, pg


def rule(**kw) -> AccessRule:
    return AccessRule(**{"name": "r", "action": "deny", **kw})


def test_sql_conditions_are_normalised(targets):
    _, pg = targets
    r = rule(
        target=pg,
        statement_kinds=[" delete", "UPDATE", "Delete"],
        tables=[" Public.Customers ", "secret_*"],
        functions=["PG_Read_File"],
    )
    r.full_clean()
    assert r.statement_kinds == ["DELETE", "UPDATE"]
    assert r.tables == ["public.customers", "secret_*"]
    assert r.functions == ["pg_read_file"]
    assert r.sql_conditions == ["statement_kinds", "tables", "functions"]
    assert r.http_conditions == []
    assert r.sql_summary == (
        "DELETE, UPDATE · tables public.customers, secret_* · functions pg_read_file"
    )


def test_unknown_statement_kinds_are_refused(targets):
    errors = errors_of(rule(target=targets[1], statement_kinds=["SELECT", "EXPLODE", "drop"]))
    (message,) = errors["statement_kinds"]
    assert message.startswith("unknown statement kinds: EXPLODE, DROP")


@pytest.mark.parametrize(
    "field, value",
    [("tables", ["public customers"]), ("tables", ['"x"']), ("functions", ["f()"])],
)
def test_bad_name_globs_are_refused(targets, field, value):
    assert "not a name glob" in errors_of(rule(target=targets[1], **{field: value}))[field][0]


def test_a_bad_parameter_pattern_is_refused(targets):
    errors = errors_of(rule(target=targets[1], parameter_pattern="(unclosed"))
    assert "not a valid regular expression" in errors["parameter_pattern"][0]


@pytest.mark.parametrize(
    "http",
    [{"methods": ["GET"]}, {"path_pattern": "/x/*"}, {"query_pattern": "sql="}],
)
@pytest.mark.parametrize(
    "sql",
    [
        {"statement_kinds": ["DELETE"]},
        {"tables": ["t"]},
        {"functions": ["f"]},
        {"without_where": True},
        {"without_limit": True},
        {"parameter_pattern": "x"},
    ],
)
def test_a_rule_for_every_target_cannot_mix_http_and_sql_conditions(targets, http, sql):
    errors = errors_of(rule(**http, **sql))
    (sql_field,) = sql
    assert "cannot be combined with HTTP conditions" in errors[sql_field][0]
    assert set(errors) == {sql_field}
    rule(**http).full_clean()
    rule(**sql).full_clean()


@pytest.mark.parametrize(
    "http",
    [{"methods": ["GET"]}, {"path_pattern": "/x/*"}, {"query_pattern": "sql="}],
)
def test_a_rule_on_a_postgres_target_has_no_http_conditions(targets, http):
    _, pg = targets
    errors = errors_of(rule(target=pg, statement_kinds=["SELECT"], **http))
    (field,) = http
    assert set(errors) == {field}
    assert "target 'orders' is a PostgreSQL database" in errors[field][0]
    # "*" and empty path patterns are no condition.
    rule(target=pg, path_pattern="*", statement_kinds=["SELECT"]).full_clean()
    rule(target=pg, body_pattern="pg_shadow").full_clean()  # body_pattern applies to SQL


@pytest.mark.parametrize(
    "sql",
    [{"statement_kinds": ["DELETE"]}, {"tables": ["t"]}, {"without_limit": True}],
)
def test_a_rule_on_an_http_target_has_no_sql_conditions(targets, sql):
    web, _ = targets
    errors = errors_of(rule(target=web, methods=["GET"], **sql))
    (field,) = sql
    assert set(errors) == {field}
    assert "target 'web' is an HTTP API" in errors[field][0]


def test_an_unsaved_target_assigned_in_memory_is_checked_too():
    errors = errors_of(rule(target=pg_target(slug="new-db"), methods=["GET"]))
    assert "target 'new-db' is a PostgreSQL database" in errors["methods"][0]


def test_the_choices_are_the_workers_vocabulary():
    from controlplane.forms import AccessRuleForm
    from controlplane.models import SSLMODE_CHOICES
    from proxy_worker.policy import SSLMODES, STATEMENT_SEVERITY

    assert {value for value, _ in SSLMODE_CHOICES} == SSLMODES
    choices = AccessRuleForm.base_fields["statement_kinds"].choices
    assert [value for value, _ in choices] == list(STATEMENT_SEVERITY)
