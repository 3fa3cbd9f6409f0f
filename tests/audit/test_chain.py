"""The tamper-evident chain: canonical JSON, appends, anchors, change records, verification."""

from __future__ import annotations

import time
import uuid

import pytest
import rfc8785
from django.core.management import call_command
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import chain
from audit.chain import acting_as, anchor, canonical, verify_chain
from audit.models import ChainHead, ChainRecord, Exchange
from controlplane.models import AgentToken, Target
from tests.audit.conftest import make_exchange

pytestmark = pytest.mark.django_db

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(exclude_categories=["Cs"])), children, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_is_byte_identical_to_the_rfc8785_reference(value):
    assert canonical(value) == rfc8785.dumps(value)


def test_canonical_rejects_what_json_cannot_carry():
    for bad in (float("nan"), 2**60, "\ud800"):
        with pytest.raises(rfc8785.CanonicalizationError):
            canonical({"x": bad})


def test_ingest_chains_every_exchange_and_it_verifies(policy, ingest):
    msgs = [make_exchange(policy, at=time.time() - 10 + i) for i in range(5)]
    ingest(*msgs)
    records = list(ChainRecord.objects.filter(kind="exchange").order_by("seq"))
    assert [str(r.exchange_id) for r in records] == [m.exchange_id for m in msgs]
    assert records[0].prev_hash == chain.GENESIS_HASH or records[0].seq > 1
    for a, b in zip(records, records[1:], strict=False):
        assert b.prev_hash == a.hash and b.seq == a.seq + 1
    head = ChainHead.objects.get(pk=1)
    assert (head.seq, head.hash) == (records[-1].seq, records[-1].hash)
    result = verify_chain()
    assert result.ok and result.exchanges == 5, result.problems


def test_a_repeated_delivery_is_chained_once(policy, ingest):
    msg = make_exchange(policy)
    ingest(msg, msg)
    ingest(msg)
    assert ChainRecord.objects.filter(exchange_id=msg.exchange_id).count() == 1


def _seq_of(exchange_id: str) -> int:
    return ChainRecord.objects.get(exchange_id=exchange_id).seq


def test_an_exchange_altered_with_sql_fails_verification_there(policy, ingest):
    msgs = [make_exchange(policy, at=time.time() - 10 + i) for i in range(4)]
    ingest(*msgs)
    victim = msgs[2].exchange_id
    with connection.cursor() as cur:
        cur.execute(
            "UPDATE audit_exchange SET response_body = %s WHERE id = %s",
            ['{"rows": [{"email": "ana@example.com"}]}', victim],
        )
    result = verify_chain()
    assert not result.ok
    assert result.first_bad_seq == _seq_of(victim)
    assert "differs from its recorded digest" in result.problems[0][1]


def test_a_chain_record_altered_with_sql_fails_verification_there(policy, ingest):
    msgs = [make_exchange(policy, at=time.time() - 10 + i) for i in range(4)]
    ingest(*msgs)
    seq = _seq_of(msgs[1].exchange_id)
    with connection.cursor() as cur:
        cur.execute(
            "UPDATE audit_chainrecord SET payload = jsonb_set(payload, '{digest}', %s) "
            "WHERE seq = %s",
            ['"' + "0" * 64 + '"', seq],
        )
    result = verify_chain()
    assert not result.ok and result.first_bad_seq == seq


def test_a_deleted_exchange_or_record_is_noticed(policy, ingest):
    msgs = [make_exchange(policy, at=time.time() - 10 + i) for i in range(4)]
    ingest(*msgs)
    Exchange.objects.filter(pk=msgs[1].exchange_id).delete()
    result = verify_chain()
    assert result.first_bad_seq == _seq_of(msgs[1].exchange_id)
    assert "deleted without a purge record" in result.problems[0][1]

    seq = _seq_of(msgs[3].exchange_id)
    with connection.cursor() as cur:
        cur.execute("DELETE FROM audit_chainrecord WHERE seq = %s", [seq - 1])
    result = verify_chain()
    assert any(s == seq - 1 and "missing" in why for s, why in result.problems)


def test_anchors_sign_the_head_and_a_forged_anchor_fails(policy, ingest):
    ingest(make_exchange(policy))
    rec = anchor()
    assert rec is not None and rec.kind == "anchor"
    assert rec.payload["head_seq"] == rec.seq - 1 and rec.payload["head_hash"] == rec.prev_hash
    assert anchor() is None  # nothing new since
    result = verify_chain()
    assert result.ok and result.anchors == 1 and result.last_anchor_seq == rec.seq
    # Re-sign with another key and fix up the record hash: the signature gives it away.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Ed25519PrivateKey.generate()
    payload = dict(rec.payload)
    message = {k: payload[k] for k in ("head_seq", "head_hash", "signed_at")}
    import base64

    payload["signature"] = base64.b64encode(other.sign(canonical(message))).decode()
    new_hash = chain.record_hash(rec.seq, "anchor", rec.at, payload, rec.prev_hash)
    ChainRecord.objects.filter(seq=rec.seq).update(payload=payload, hash=new_hash)
    ChainHead.objects.filter(pk=1).update(hash=new_hash)
    result = verify_chain()
    assert not result.ok and result.first_bad_seq == rec.seq
    assert "signature" in result.problems[0][1]


def test_no_anchor_without_a_signing_key(policy, ingest, settings):
    settings.GATEHOUSE_AUDIT_SIGNING_KEY = ""
    ingest(make_exchange(policy))
    assert anchor() is None


def test_control_plane_changes_are_chained_with_actor_and_never_secrets(users, db):
    with acting_as(users["admin"]):
        t = Target(name="Billing", slug="billing", upstream_url="http://127.0.0.1:9")
        t.set_credential("sk-very-secret-upstream-key")
        t.save()
        t.retention_days = 30
        t.set_credential("sk-rotated-secret")
        t.save()
        t.delete()
    records = list(ChainRecord.objects.filter(kind="change").order_by("seq"))
    target_records = [r for r in records if r.payload["model"] == "controlplane.target"]
    create, update, delete = target_records[-3:]
    assert create.payload["action"] == "create"
    assert create.payload["actor"] == {"user_id": users["admin"].pk, "username": "admin"}
    assert create.payload["secrets_changed"] == ["credential_encrypted"]
    assert update.payload["action"] == "update"
    assert update.payload["old"] == {"retention_days": None}
    assert update.payload["new"] == {"retention_days": 30}
    assert update.payload["secrets_changed"] == ["credential_encrypted"]
    assert delete.payload["action"] == "delete" and delete.payload["old"]["slug"] == "billing"
    dump = str([r.payload for r in records])
    assert "sk-very-secret" not in dump and "sk-rotated" not in dump
    assert "credential_encrypted': '" not in dump  # never the ciphertext either
    assert verify_chain().ok


def test_token_and_role_changes_are_chained(policy, users):
    row, plaintext = AgentToken.issue(policy.agent)
    rec = ChainRecord.objects.filter(kind="change").order_by("-seq").first()
    assert rec.payload["model"] == "controlplane.agenttoken"
    assert rec.payload["secrets_changed"] == ["token_hash"]
    assert plaintext not in str(rec.payload) and row.token_hash not in str(rec.payload)
    from django.contrib.auth.models import Group

    users["outsider"].groups.add(Group.objects.get(name="auditor"))
    rec = ChainRecord.objects.filter(kind="change").order_by("-seq").first()
    assert rec.payload["action"] == "m2m:groups:add"
    assert rec.payload["object"] == "outsider"


def test_the_request_user_is_the_actor(rf, users, policy):
    from django.http import HttpResponse

    from audit.middleware import AuditActorMiddleware

    def view(request):
        policy.target.name = "Customers renamed"
        policy.target.save()
        return HttpResponse("ok")

    request = rf.post("/anything")
    request.user = users["admin"]
    AuditActorMiddleware(view)(request)
    rec = (
        ChainRecord.objects.filter(kind="change", payload__model="controlplane.target")
        .order_by("-seq")
        .first()
    )
    assert rec.payload["actor"] == {"user_id": users["admin"].pk, "username": "admin"}
    assert rec.payload["old"] == {"name": "Customers"}
    assert rec.payload["new"] == {"name": "Customers renamed"}
    assert chain.current_actor.get() is None  # reset after the request


def test_audit_verify_command_points_at_the_first_broken_record(policy, ingest, capsys):
    msgs = [make_exchange(policy, at=time.time() - 10 + i) for i in range(3)]
    ingest(*msgs)
    call_command("audit_verify")
    assert "chain OK" in capsys.readouterr().out
    with connection.cursor() as cur:
        cur.execute(
            "UPDATE audit_exchange SET url = url || '&x=1' WHERE id = %s", [msgs[1].exchange_id]
        )
    with pytest.raises(SystemExit) as exc:
        call_command("audit_verify")
    assert exc.value.code == 1
    out = capsys.readouterr().out
    assert f"chain BROKEN at record #{_seq_of(msgs[1].exchange_id)}" in out


def test_concurrent_appenders_never_fork_the_chain(policy, users):
    """Appends from several threads (own connections) stay one gap-free chain."""
    import threading

    from django.db import connections

    errors: list[Exception] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                with chain.appending() as app:
                    app.add("change", {"thread": n, "i": i, "id": str(uuid.uuid4())})
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs = list(ChainRecord.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert verify_chain().ok


test_concurrent_appenders_never_fork_the_chain = pytest.mark.django_db(transaction=True)(
    test_concurrent_appenders_never_fork_the_chain
)
