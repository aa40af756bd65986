"""The audit log's records: what one holds, the hash chain and signatures that seal it, and verify() finding breaks.

Records are built and sealed in memory, then "stored" as read_records() returns them: each with the POSITION key
("storedAt", the sequence number in its object's name) next to what the record says of itself.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
import math
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.adapters.audit import (
    GENESIS,
    POSITION,
    RECORD_API_VERSION,
    RECORD_KIND,
    Problem,
    build_record,
    filter_records,
    key_id,
    load_public_key,
    public_key_pem,
    record_hash,
    record_name,
    record_object,
    seal,
    verify,
)
from engine.adapters.auditwitness import GitWitness, read_witness
from engine.core.admission import (
    BREAK_GLASS_ANNOTATION,
    AdmissionRequest,
    Decision,
    Exemptions,
    GitObject,
    Verdict,
    decide,
)
from engine.core.auditchain import (
    MAX_FIELDS,
    RECORD_BYTES,
    VALUE_BYTES,
    Checkpoint,
    RetentionPolicy,
    canonical,
    checkpoint,
    find_last,
    fold,
    fold_key,
    marked_late,
    parse_checkpoints,
    retention_body,
    retire_through,
)
from engine.core.drift import DriftItem, DriftKind
from engine.core.errors import GitOpsError
from engine.core.normalize import SecretMasker
from engine.core.objects import API_GROUP, TRACKING_LABEL, AppRef, DriftMode, ObjectKey

pytestmark = pytest.mark.usefixtures("collect_git_processes")  # see tests/conftest.py

SIGNER = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
KEY = ObjectKey("apps", "Deployment", "shop", "web")
T0 = "2026-11-26T09:00:00.000Z"
N = 6


def body(i: int, *, app: str = "gitops-system/shop", user: str = "alice", time: str = "") -> dict[str, Any]:
    return {
        "time": time or f"2024-05-01T10:00:{i:02d}.000Z",
        "requestUID": f"uid-{i}",
        "user": user,
        "groups": ["developers", "system:authenticated"],
        "operation": "UPDATE",
        "subResource": "",
        "object": KEY.as_dict(),
        "application": app,
        "revision": "0123456789abcdef",
        "mode": "enforce",
        "decision": "denied",
        "reason": "",
        "fields": [{"path": "/spec/replicas", "kind": "changed", "git": 2, "requested": i}],
    }


def chain(n: int = N, signer: Ed25519PrivateKey = SIGNER) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    previous = GENESIS
    for i in range(1, n + 1):
        record = seal(body(i), i, previous, signer)
        records.append(record)
        previous = record["hash"]
    return records


def stored(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As read_records() returns them: each with the position it was found at."""
    return [{**r, POSITION: int(r["sequence"])} for r in records]


def whats(problems: list[Problem]) -> list[tuple[int, str]]:
    return [(p.sequence, p.what) for p in problems]


# --- seal ------------------------------------------------------------------------------------------------------------
def test_seal_adds_the_chain_fields_and_a_signature_of_the_hash() -> None:
    first, second = chain(2)
    assert first["sequence"] == 1
    assert first["previous"] == GENESIS
    assert second["previous"] == first["hash"]
    assert first["keyID"] == key_id(SIGNER.public_key())
    assert first["hash"] == record_hash(first)
    SIGNER.public_key().verify(base64.b64decode(first["signature"]), first["hash"].encode())
    assert {k: v for k, v in first.items() if k not in ("sequence", "previous", "keyID", "hash", "signature")} == body(
        1
    )


def test_seal_does_not_change_the_body_it_is_given() -> None:
    original = body(1)
    seal(original, 1, GENESIS, SIGNER)
    assert original == body(1)


def test_the_hash_covers_every_field_but_itself_and_the_signature() -> None:
    record = chain(1)[0]
    assert record_hash({**record, "hash": "x", "signature": "y"}) == record["hash"]
    assert record_hash({**record, "user": "mallory"}) != record["hash"]


# --- verify: a clean chain -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 2, N, 40])
def test_a_clean_chain_has_no_problems(n: int) -> None:
    records = chain(n)
    public = SIGNER.public_key()
    assert verify(records, public) == []
    assert verify(stored(records), public) == []


def test_verify_does_not_depend_on_the_order_records_are_listed_in() -> None:
    records = stored(chain(12))
    random.Random(7).shuffle(records)
    assert verify(records, SIGNER.public_key()) == []


# --- verify: an edited record -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user", "mallory"),
        ("decision", "allowed"),
        ("groups", ["gitops:break-glass"]),
        ("fields", []),
        ("object", {**KEY.as_dict(), "name": "other"}),
        ("time", "2030-01-01T00:00:00.000Z"),
        ("reason", "it was fine"),
        ("extra", "a field the webhook never writes"),
    ],
)
@pytest.mark.parametrize("at", [1, 3, N])
def test_an_edited_field_does_not_match_its_hash(field: str, value: Any, at: int) -> None:
    records = stored(chain())
    records[at - 1][field] = value
    assert whats(verify(records, SIGNER.public_key())) == [(at, "its content does not match its hash (edited?)")]


def test_an_edited_record_with_a_recomputed_hash_fails_its_signature_and_breaks_the_chain() -> None:
    records = stored(chain())
    records[2]["user"] = "mallory"
    # recomputed as verify() sees the record: without its position
    records[2]["hash"] = record_hash({k: v for k, v in records[2].items() if k != POSITION})
    problems = whats(verify(records, SIGNER.public_key()))
    assert problems == [
        (3, "its signature is not valid (edited or re-signed?)"),
        (4, "it does not follow the record before it (reordered or replaced?)"),
    ]


def test_a_forged_signature_is_not_valid() -> None:
    records = stored(chain())
    records[1]["signature"] = base64.b64encode(OTHER.sign(records[1]["hash"].encode())).decode()
    assert whats(verify(records, SIGNER.public_key())) == [(2, "its signature is not valid (edited or re-signed?)")]


@pytest.mark.parametrize("signature", ["", "not base64 !!", base64.b64encode(b"short").decode()])
def test_a_garbled_signature_is_a_problem_not_a_crash(signature: str) -> None:
    records = stored(chain(3))
    records[1]["signature"] = signature
    assert whats(verify(records, SIGNER.public_key())) == [(2, "its signature is not valid (edited or re-signed?)")]


# --- verify: keys ----------------------------------------------------------------------------------------------------
def test_a_record_resigned_with_another_key_is_a_key_problem() -> None:
    records = chain()
    resealed = seal(
        {k: v for k, v in records[2].items() if k not in ("sequence", "previous", "keyID", "hash", "signature")},
        3,
        records[1]["hash"],
        OTHER,
    )
    records[2] = resealed
    problems = whats(verify(stored(records), SIGNER.public_key()))
    assert (3, f"signed by key {key_id(OTHER.public_key())}, not {key_id(SIGNER.public_key())}") in problems
    assert (3, "its signature is not valid (edited or re-signed?)") in problems
    assert (4, "it does not follow the record before it (reordered or replaced?)") in problems
    assert {seq for seq, _ in problems} == {3, 4}


def test_a_whole_chain_resigned_with_another_key_is_reported_record_by_record() -> None:
    problems = whats(verify(stored(chain(4, OTHER)), SIGNER.public_key()))
    for seq in range(1, 5):
        assert (seq, f"signed by key {key_id(OTHER.public_key())}, not {key_id(SIGNER.public_key())}") in problems


def test_the_wrong_public_key_fails_every_record() -> None:
    problems = verify(stored(chain()), OTHER.public_key())
    assert {p.sequence for p in problems} == set(range(1, N + 1))
    assert all(
        p.what.startswith("signed by key") or p.what == "its signature is not valid (edited or re-signed?)"
        for p in problems
    )
    assert sum(p.what.startswith("signed by key") for p in problems) == N


# --- verify: a deleted record ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("deleted", "expected"),
    [
        pytest.param([3], [(4, "record 3 is missing (deleted?)")], id="one"),
        pytest.param([1], [(2, "record 1 is missing (deleted?)")], id="first"),
        pytest.param([2, 3, 4], [(5, "records 2 to 4 are missing (deleted?)")], id="several"),
        pytest.param(
            [2, 4], [(3, "record 2 is missing (deleted?)"), (5, "record 4 is missing (deleted?)")], id="two-gaps"
        ),
    ],
)
@pytest.mark.parametrize("with_position", [True, False])
def test_a_deleted_record_is_missing(deleted: list[int], expected: list[tuple[int, str]], with_position: bool) -> None:
    records = [r for r in chain() if r["sequence"] not in deleted]
    problems = verify(stored(records) if with_position else records, SIGNER.public_key())
    assert whats(problems) == expected
    assert all("missing" in str(p) for p in problems)


# --- verify: reordered records ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b"), [(2, 3), (1, 2), (1, N), (3, 5)])
def test_two_records_swapped_in_storage_are_reordered(a: int, b: int) -> None:
    records = stored(chain())
    records[a - 1][POSITION], records[b - 1][POSITION] = b, a
    problems = whats(verify(records, SIGNER.public_key()))
    assert (a, f"it holds record {b} (reordered?)") in problems
    assert (b, f"it holds record {a} (reordered?)") in problems
    assert all("edited" not in what for _, what in problems)


def test_a_record_copied_over_another_is_reported() -> None:
    records = stored(chain())
    records[3] = {**records[2], POSITION: 4}  # record 3's content stored again as record 4
    problems = whats(verify(records, SIGNER.public_key()))
    assert (4, "it holds record 3 (reordered?)") in problems


def test_problems_read_as_sentences() -> None:
    assert str(Problem(4, "record 3 is missing (deleted?)")) == "record 4: record 3 is missing (deleted?)"


# --- record objects and keys -----------------------------------------------------------------------------------------
def test_a_record_is_stored_under_its_sequence_number() -> None:
    record = chain(3)[2]
    obj = record_object(record, "gitops-system")
    assert obj["apiVersion"] == RECORD_API_VERSION
    assert obj["kind"] == RECORD_KIND
    assert obj["metadata"]["name"] == record_name(3) == "audit-000000000003"
    assert obj["metadata"]["namespace"] == "gitops-system"
    assert obj["metadata"]["labels"] == {
        f"{API_GROUP}/decision": "denied",
        f"{API_GROUP}/application": "gitops-system.shop",
    }
    assert obj["record"] == record


def test_the_public_key_round_trips_through_pem() -> None:
    loaded = load_public_key(public_key_pem(SIGNER.public_key()))
    assert key_id(loaded) == key_id(SIGNER.public_key())
    assert verify(chain(3), loaded) == []


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param("not a key", id="garbage"),
        pytest.param(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", id="bad-pem"),
    ],
)
def test_a_public_key_that_is_not_pem_is_a_domain_error(pem: str | bytes) -> None:
    with pytest.raises(GitOpsError, match="not a PEM public key"):
        load_public_key(pem)


def test_a_public_key_that_is_not_ed25519_is_a_domain_error() -> None:
    from cryptography.hazmat.primitives import serialization

    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(GitOpsError, match="not an Ed25519 key"):
        load_public_key(ec_pem)


# --- filter_records --------------------------------------------------------------------------------------------------
def mixed() -> list[dict[str, Any]]:
    specs = [
        ("gitops-system/shop", "alice", "2024-05-01T10:00:00.000Z"),
        ("gitops-system/blog", "bob", "2024-05-02T10:00:00.000Z"),
        ("team-a/shop", "alice", "2024-05-03T10:00:00.000Z"),
        ("gitops-system/shop", "bob", "2024-05-04T10:00:00.000Z"),
        ("", "carol", "2024-05-05T10:00:00.000Z"),
    ]
    records, previous = [], GENESIS
    for i, (app, user, time) in enumerate(specs, 1):
        record = seal(body(i, app=app, user=user, time=time), i, previous, SIGNER)
        previous = record["hash"]
        records.append(record)
    out = stored(records)
    out.reverse()  # as listed, in any order
    return out


@pytest.mark.parametrize(
    ("criteria", "sequences"),
    [
        pytest.param({}, [1, 2, 3, 4, 5], id="all"),
        pytest.param({"app": "shop"}, [1, 3, 4], id="app-by-name"),
        pytest.param({"app": "gitops-system/shop"}, [1, 4], id="app-by-full-name"),
        pytest.param({"app": "blog"}, [2], id="other-app"),
        pytest.param({"app": "nothing"}, [], id="unknown-app"),
        pytest.param({"user": "alice"}, [1, 3], id="user"),
        pytest.param({"user": "nobody"}, [], id="unknown-user"),
        pytest.param({"since": "2024-05-03"}, [3, 4, 5], id="since-day"),
        pytest.param({"since": "2024-05-03T10:00:00.000Z"}, [3, 4, 5], id="since-exact"),
        pytest.param({"since": "2024-05-03T10:00:00.001Z"}, [4, 5], id="since-just-after"),
        pytest.param({"app": "shop", "user": "bob"}, [4], id="app-and-user"),
        pytest.param({"app": "shop", "since": "2024-05-02"}, [3, 4], id="app-and-since"),
    ],
)
def test_filter_records(criteria: dict[str, str], sequences: list[int]) -> None:
    found = list(filter_records(mixed(), **criteria))
    assert [r["sequence"] for r in found] == sequences
    assert all(POSITION not in r for r in found)


def test_filtered_records_still_verify_as_their_full_chain() -> None:
    """Dropping the position leaves the records exactly as they were sealed."""
    found = [dict(r) for r in filter_records(mixed())]
    assert verify(found, SIGNER.public_key()) == []


# --- build_record ----------------------------------------------------------------------------------------------------
MASKER = SecretMasker(b"unit-test-key-0123456789abcdef!!")


def admission_request(**more: Any) -> AdmissionRequest:
    req: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "operation": "UPDATE",
        "userInfo": {"username": "alice", "groups": ["system:authenticated", "developers"]},
        "name": "web",
        "namespace": "shop",
        **more,
    }
    return req  # type: ignore[return-value]


GIT = GitObject(KEY, AppRef("gitops-system", "shop"), DriftMode.WARN, "f" * 40, {}, {})


def test_a_record_holds_the_facts_of_the_attempt() -> None:
    items = (
        DriftItem("/spec/replicas", DriftKind.CHANGED, desired=2, live=5),
        DriftItem("/spec/template/spec/containers/0/env/2", DriftKind.ADDED, live={"name": "X", "value": "1"}),
    )
    decision = Decision(True, Verdict.WARNED, warnings=("w",), items=items, record=True)
    record = build_record(admission_request(subResource="scale"), decision, GIT, KEY, time=T0)
    assert record == {
        "time": T0,  # the clock's, passed in: the chain's core reads no clock
        "requestUID": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "user": "alice",
        "groups": ["developers", "system:authenticated"],
        "operation": "UPDATE",
        "subResource": "scale",
        "object": {"group": "apps", "kind": "Deployment", "namespace": "shop", "name": "web"},
        "application": "gitops-system/shop",
        "revision": "f" * 40,
        "mode": "warn",
        "decision": "warned",
        "reason": "",
        "fields": [
            {"path": "/spec/replicas", "kind": "changed", "git": 2, "requested": 5},
            {
                "path": "/spec/template/spec/containers/0/env/2",
                "kind": "added",
                "git": None,
                "requested": {"name": "X", "value": "1"},
            },
        ],
    }
    json.dumps(record)  # a JSON document as it is


@pytest.mark.parametrize(
    ("verdict", "reason", "kept"),
    [
        (Verdict.BREAK_GLASS, "INC-1234: outage", "INC-1234: outage"),
        (Verdict.DENIED, "adds no drift", ""),
        (Verdict.RECORDED, "anything", ""),
    ],
)
def test_the_reason_is_kept_only_for_break_glass(verdict: Verdict, reason: str, kept: str) -> None:
    decision = Decision(verdict is not Verdict.DENIED, verdict, reason=reason, record=True)
    record = build_record(admission_request(), decision, GIT, KEY, time=T0)
    assert record["reason"] == kept
    assert record["decision"] == verdict.value


def test_a_record_of_an_object_git_does_not_have() -> None:
    decision = Decision(False, Verdict.DENIED, message="m", record=True)
    req = admission_request(operation="CREATE", userInfo={"username": "bob"})
    record = build_record(req, decision, None, KEY, time=T0)
    assert (record["application"], record["revision"], record["mode"]) == ("", "", "")
    assert record["groups"] == []
    assert record["subResource"] == ""
    assert record["operation"] == "CREATE"


GIT_PASSWORD, LIVE_PASSWORD = "hunter2-from-git", "s3cr3t-typed-by-hand"


def secret(password: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop", "labels": {TRACKING_LABEL: "shop"}, "annotations": annotations},
        "type": "Opaque",
        "data": {"password": base64.b64encode(password.encode()).decode(), "extra": base64.b64encode(b"xyz").decode()},
    }


@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
@pytest.mark.parametrize("glass", [False, True])
def test_a_record_of_a_secret_change_holds_no_secret_value(mode: str, glass: bool) -> None:
    secret_key = ObjectKey("", "Secret", "shop", "db")
    fields: dict[str, Any] = {"f:type": {}, "f:data": {"f:password": {}}}
    git = GitObject(
        secret_key, AppRef("gitops-system", "shop"), DriftMode(mode), "f" * 40, secret(GIT_PASSWORD), fields
    )
    annotations = {BREAK_GLASS_ANNOTATION: "INC-1"} if glass else {}
    req = admission_request(
        kind={"group": "", "version": "v1", "kind": "Secret"},
        resource={"group": "", "version": "v1", "resource": "secrets"},
        name="db",
        object=secret(LIVE_PASSWORD, **annotations),
        oldObject=copy.deepcopy(secret(GIT_PASSWORD)),
        userInfo={"username": "alice", "groups": ["gitops:break-glass"]},
    )
    decision = decide(req, git, exemptions=Exemptions(), masker=MASKER)
    assert decision.record
    text = json.dumps(build_record(req, decision, git, secret_key, time=T0))
    assert "/data/password" in text
    for raw in (GIT_PASSWORD, LIVE_PASSWORD):
        assert raw not in text
        assert base64.b64encode(raw.encode()).decode() not in text


@pytest.mark.parametrize(("kept", "last_known", "expected"), [(N, N, []), (N - 2, N, [N]), (N, 0, []), (0, 2, [2])])
def test_records_deleted_at_the_end_are_caught_by_the_last_known_number(
    kept: int, last_known: int, expected: list[int]
) -> None:
    records = chain()[:kept]
    problems = verify(records, SIGNER.public_key(), last_known)
    assert [p.sequence for p in problems] == expected
    assert all("(deleted?)" in str(p) for p in problems)


# --- bounded records -------------------------------------------------------------------------------------------------
def decision_of(*items: DriftItem, reason: str = "", verdict: Verdict = Verdict.DENIED) -> Decision:
    return Decision(verdict is not Verdict.DENIED, verdict, reason=reason, items=items, record=True)


def test_a_huge_value_is_cut_with_a_digest_of_the_whole() -> None:
    huge = "x" * 1_000_000
    record = build_record(
        admission_request(), decision_of(DriftItem("/data/blob", DriftKind.CHANGED, "a", huge)), GIT, KEY, time=T0
    )
    cut = record["fields"][0]["requested"]
    whole = json.dumps(huge).encode()
    assert cut["bytes"] == len(whole)
    assert cut["sha256"] == hashlib.sha256(whole).hexdigest()
    assert len(cut["$cut"]) == VALUE_BYTES
    assert record["fields"][0]["git"] == "a"  # a small value stays as it is
    assert len(canonical(record)) < 2_000


def test_many_fields_are_listed_up_to_a_bound_with_a_count_and_digest_of_the_rest() -> None:
    items = [DriftItem(f"/data/k{i}", DriftKind.ADDED, None, i) for i in range(100)]
    record = build_record(admission_request(), decision_of(*items), GIT, KEY, time=T0)
    assert len(record["fields"]) == MAX_FIELDS
    assert record["fieldsOmitted"] == 100 - MAX_FIELDS
    assert len(record["fieldsSHA256"]) == 64


def test_a_record_of_the_largest_attempt_stays_below_the_record_bound() -> None:
    items = [
        DriftItem("/data/" + "p" * 100_000 + str(i), DriftKind.CHANGED, "g" * 100_000, "r" * 100_000) for i in range(50)
    ]
    req = admission_request(userInfo={"username": "u" * 100_000, "groups": [f"g{i}" * 1000 for i in range(500)]})
    decision = decision_of(*items, reason="why" * 100_000, verdict=Verdict.BREAK_GLASS)
    record = build_record(req, decision, GIT, KEY, time=T0)
    assert len(canonical(record)) <= RECORD_BYTES
    assert record["reason"].startswith("whywhy")
    assert "sha256" in record["reason"]
    assert record["groupsOmitted"] == 500 - 32
    assert "sha256" in record["fields"][0]["path"]


# --- folding ---------------------------------------------------------------------------------------------------------
def test_identical_attempts_share_a_fold_key_whatever_their_time_and_uid() -> None:
    assert fold_key(body(1)) == fold_key({**body(1), "time": "2030-01-01T00:00:00.000Z", "requestUID": "other"})
    assert fold_key(body(1)) != fold_key(body(2))  # another requested value
    assert fold_key(body(1)) != fold_key(body(1, user="bob"))
    assert fold_key(body(1)) != fold_key({**body(1), "decision": "warned"})


def test_a_folded_record_counts_its_attempts_and_the_chain_after_it_still_holds() -> None:
    records = chain(5)
    folded = records[2]
    for n in range(3):
        folded = fold(folded, time=f"2024-05-01T11:00:0{n}.000Z", request_uid=f"again-{n}", late=n == 1, signer=SIGNER)
    records[2] = folded
    assert folded["hash"] == chain(5)[2]["hash"]  # the core, which the next record chains to, is unchanged
    assert folded["tally"] == {
        "count": 4,
        "lastTime": "2024-05-01T11:00:02.000Z",
        "lastRequestUID": "again-2",
        "late": True,
        "lateCount": 1,
    }
    assert verify(stored(records), SIGNER.public_key()) == []


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r, others: {**r, "tally": {**r["tally"], "count": 1}},  # fewer attempts than there were
        lambda r, others: {**r, "tally": {**r["tally"], "late": False}},
        lambda r, others: {**r, "tallySignature": others[0]["tallySignature"]},  # another record's tally signature
        lambda r, others: {**r, "tally": "many"},
        lambda r, others: {**r, "tally": {**r["tally"]}, "tallySignature": "garbage!"},
    ],
)
def test_an_edited_tally_is_caught(tamper: Any) -> None:
    records = chain(4)
    records[0] = fold(records[0], time="t", request_uid="u", late=False, signer=SIGNER)
    records[2] = fold(records[2], time="t", request_uid="u", late=True, signer=SIGNER)
    records[2] = tamper(records[2], records)
    assert whats(verify(stored(records), SIGNER.public_key())) == [
        (3, "its tally of repeated attempts is not validly signed (edited?)")
    ]


def test_a_tally_signed_by_another_key_is_caught() -> None:
    records = chain(3)
    records[1] = fold(records[1], time="t", request_uid="u", late=False, signer=OTHER)
    assert [p.sequence for p in verify(stored(records), SIGNER.public_key())] == [2]


def test_a_record_durable_after_the_deadline_says_late() -> None:
    record = marked_late(chain(1)[0], SIGNER)
    assert record["tally"] == {"count": 1, "late": True, "lateCount": 1}
    assert verify(stored([record]), SIGNER.public_key()) == []


# --- finding the head ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("head", "start"), [(0, 0), (1, 0), (2, 0), (7, 0), (1000, 0), (7930, 0), (10**6, 0), (7930, 7900)]
)
def test_the_head_is_found_in_logarithmic_gets(head: int, start: int) -> None:
    asked: list[int] = []

    def exists(n: int) -> bool:
        asked.append(n)
        return n <= head

    assert find_last(exists, start) == head
    assert len(asked) <= 2 * math.ceil(math.log2(head - start + 2)) + 1


# --- retention -------------------------------------------------------------------------------------------------------
def with_retention(
    records: list[dict[str, Any]], through: int, signer: Ed25519PrivateKey = SIGNER
) -> list[dict[str, Any]]:
    """The chain with a retention record appended that retires records 1..through."""
    last = records[-1]
    kept = next(r for r in records if r["sequence"] == through)
    retention = seal(
        retention_body(through, kept["hash"], through, through, "2024-06-01T00:00:00.000Z"),
        last["sequence"] + 1,
        last["hash"],
        signer,
    )
    return [*records, retention]


@pytest.mark.parametrize("deleted", [0, 3, 6])
def test_records_retired_by_a_retention_record_are_accepted_as_gone(deleted: int) -> None:
    records = with_retention(chain(10), 6)
    kept = [r for r in records if r["sequence"] > deleted]
    assert verify(stored(kept), SIGNER.public_key()) == []


def test_a_retention_record_twice_retires_up_to_the_later_one() -> None:
    records = with_retention(chain(10), 4)
    records = with_retention(records, 9)  # 9 < 11, and it retires the first retention record as well
    kept = [r for r in records if r["sequence"] > 9]
    assert verify(stored(kept), SIGNER.public_key()) == []


def test_without_the_retention_record_the_retired_ones_are_missing() -> None:
    records = with_retention(chain(10), 6)
    kept = [r for r in records if r["sequence"] > 6 and r.get("type") != "retention"]
    assert whats(verify(stored(kept), SIGNER.public_key()))[0] == (7, "records 1 to 6 are missing (deleted?)")


def test_a_retention_record_forged_with_another_key_retires_nothing() -> None:
    records = with_retention(chain(10), 6, signer=OTHER)
    kept = [r for r in records if r["sequence"] > 6]
    problems = whats(verify(stored(kept), SIGNER.public_key()))
    assert (7, "records 1 to 6 are missing (deleted?)") in problems
    assert (11, f"signed by key {key_id(OTHER.public_key())}, not {key_id(SIGNER.public_key())}") in problems


def test_a_retention_cannot_hide_a_record_deleted_after_it() -> None:
    records = with_retention(chain(10), 6)
    kept = [r for r in records if r["sequence"] > 6 and r["sequence"] != 8]
    assert whats(verify(stored(kept), SIGNER.public_key())) == [(9, "record 8 is missing (deleted?)")]


def test_a_leftover_record_replaced_under_a_retention_is_caught() -> None:
    records = with_retention(chain(10), 6)
    replaced = seal(body(99), 6, records[4]["hash"], SIGNER)
    kept = [r for r in records if r["sequence"] > 5 and r["sequence"] != 6] + [replaced]
    assert whats(verify(stored(kept), SIGNER.public_key())) == [
        (6, "its hash is not the one the retention record kept (replaced?)")
    ]


WHEN = datetime.datetime(2024, 5, 2, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("policy", "through"),
    [
        (RetentionPolicy(), 0),
        (RetentionPolicy(records=10), 0),
        (RetentionPolicy(records=4), 2),
        (RetentionPolicy(records=1), 5),
        (RetentionPolicy(max_age=datetime.timedelta(days=1)), 0),
        (RetentionPolicy(max_age=datetime.timedelta(hours=14) - datetime.timedelta(seconds=3.5)), 3),
        (RetentionPolicy(max_age=datetime.timedelta(seconds=1)), 5),  # never the newest
        (RetentionPolicy(max_bytes=1), 5),
        (RetentionPolicy(records=5, max_bytes=10**9), 1),
    ],
)
def test_a_policy_retires_a_prefix_never_the_newest(policy: RetentionPolicy, through: int) -> None:
    assert retire_through(chain(6), policy, WHEN) == through


def test_the_byte_bound_keeps_the_newest_records_that_fit() -> None:
    records = chain(6)
    size = len(canonical(records[0]))
    assert retire_through(records, RetentionPolicy(max_bytes=int(size * 3.5)), WHEN) == 3


def test_a_folded_record_is_as_old_as_its_last_attempt() -> None:
    records = chain(3)
    records[0] = fold(records[0], time="2024-05-01T23:59:59.000Z", request_uid="u", late=False, signer=SIGNER)
    assert retire_through(records, RetentionPolicy(max_age=datetime.timedelta(hours=1)), WHEN) == 0


# --- the witness -----------------------------------------------------------------------------------------------------
def witnessed(records: list[dict[str, Any]], *at: int, signer: Ed25519PrivateKey = SIGNER) -> list[Checkpoint]:
    return [checkpoint(r, signer, "2024-05-01T12:00:00.000Z") for r in records if r["sequence"] in at]


def test_a_log_that_agrees_with_its_witness_has_no_problems() -> None:
    records = chain(10)
    assert verify(stored(records), SIGNER.public_key(), witness=witnessed(records, 3, 7, 10)) == []


def test_truncation_below_a_witnessed_checkpoint_is_caught() -> None:
    records = chain(10)
    witness = witnessed(records, 5, 9)
    truncated = records[:7]
    assert verify(stored(truncated), SIGNER.public_key()) == []  # the log alone cannot tell
    # ...nor can the writers' hint, which the one who truncated edits as well
    assert verify(stored(truncated), SIGNER.public_key(), last_known=7) == []
    assert whats(verify(stored(truncated), SIGNER.public_key(), last_known=7, witness=witness)) == [
        (9, "the log ends at 7 but the witness saw record 9 (truncated?)")
    ]


def test_truncation_then_new_appends_at_the_same_numbers_is_caught() -> None:
    records = chain(10)
    witness = witnessed(records, 9)
    rewritten = records[:7]
    for i in range(8, 13):  # a restarted writer goes on from 7 with new records
        rewritten.append(seal(body(100 + i), i, rewritten[-1]["hash"], SIGNER))
    assert verify(stored(rewritten), SIGNER.public_key()) == []
    assert whats(verify(stored(rewritten), SIGNER.public_key(), witness=witness)) == [
        (9, "its hash differs from the one the witness saw (rewritten and re-signed?)")
    ]


def test_a_log_resigned_with_a_new_key_is_caught_by_the_witnessed_key() -> None:
    witness = witnessed(chain(10), 4, 8)
    resigned = chain(10, signer=OTHER)  # every record re-sealed, the public key ConfigMap replaced
    assert verify(stored(resigned), OTHER.public_key()) == []
    problems = whats(verify(stored(resigned), OTHER.public_key(), witness=witness))
    assert problems[0] == (
        4,
        f"the witness saw the log signed by key {key_id(SIGNER.public_key())}, it is now signed by "
        f"{key_id(OTHER.public_key())} (re-signed with another key?)",
    )


def test_the_stolen_key_rewriting_and_truncating_is_caught() -> None:
    records = chain(10)
    witness = witnessed(records, 4, 8)
    forged = records[:2]  # from record 3 on: rewritten with the stolen key, and the last ones dropped
    for i in range(3, 7):
        forged.append(seal(body(i, user="nobody"), i, forged[-1]["hash"], SIGNER))
    assert verify(stored(forged), SIGNER.public_key()) == []
    assert whats(verify(stored(forged), SIGNER.public_key(), witness=witness)) == [
        (8, "the log ends at 6 but the witness saw record 8 (truncated?)"),
        (4, "its hash differs from the one the witness saw (rewritten and re-signed?)"),
    ]


def test_a_forged_witness_line_is_caught() -> None:
    records = chain(5)
    forged = Checkpoint(3, records[2]["hash"], 1, "t", key_id(SIGNER.public_key()), witnessed(records, 4)[0].signature)
    assert whats(verify(stored(records), SIGNER.public_key(), witness=[forged])) == [
        (3, "the witness's checkpoint of it is not validly signed (forged?)")
    ]


def test_a_count_rolled_back_below_the_witnessed_one_is_caught() -> None:
    records = chain(3)
    records[2] = fold(records[2], time="t", request_uid="u", late=False, signer=SIGNER)
    witness = witnessed(records, 3)
    records[2] = {k: v for k, v in records[2].items() if k not in ("tally", "tallySignature")}  # an older version
    assert whats(verify(stored(records), SIGNER.public_key(), witness=witness)) == [
        (3, "it counts 1 attempts, the witness saw 2 (rolled back?)")
    ]


def test_a_witnessed_retention_is_accepted_and_an_unwitnessed_one_is_not() -> None:
    records = with_retention(chain(10), 6)
    before = witnessed(records, 3, 9)
    kept = [r for r in records if r["sequence"] > 6]
    assert whats(verify(stored(kept), SIGNER.public_key(), witness=before)) == [
        (
            3,
            "the witness saw it; it was retired by a retention record (at 11) the witness never saw (an old "
            "witness, or a retention forged with the signing key?)",
        )
    ]
    assert verify(stored(kept), SIGNER.public_key(), witness=before + witnessed(records, 11)) == []


def test_checkpoints_are_read_from_the_webhooks_stdout_among_other_lines() -> None:
    cps = witnessed(chain(4), 2, 4)
    lines = [
        "starting gitops-webhook",
        json.dumps({"auditRecord": chain(1)[0]}),
        json.dumps({"auditCheckpoint": cps[0].as_dict()}),
        "{not json",
        json.dumps(cps[1].as_dict()),
        "[1, 2]",
    ]
    assert parse_checkpoints(lines) == cps


def test_a_malformed_checkpoint_is_a_domain_error() -> None:
    with pytest.raises(GitOpsError, match="not an audit checkpoint"):
        parse_checkpoints([json.dumps({"auditCheckpoint": {"sequence": "x"}})])


# --- the Git witness (a real repository) ----------------------------------------------------------------------------
@pytest.mark.parametrize("bare", [True, False])
def test_checkpoints_committed_to_a_git_witness_read_back(tmp_path: Path, bare: bool) -> None:
    repo = tmp_path / "witness"
    subprocess.run(["git", "init", "-q", *(["--bare"] if bare else []), str(repo)], check=True)
    cps = witnessed(chain(6), 1, 3, 6)
    writer = GitWitness(str(repo), workdir=tmp_path / "clone")
    writer.add(cps[:2])
    other_replica = GitWitness(str(repo), workdir=tmp_path / "clone2")
    other_replica.add(cps[2:])
    writer.add(cps[:1])  # after the other replica pushed: fetched and added on top
    assert read_witness(str(repo)) == [*cps, cps[0]]
    assert other_replica.read() == [*cps, cps[0]]
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True, check=True)
    assert log.stdout.splitlines()[-1] == f"audit checkpoint 3 ({cps[1].hash[:12]})"


def test_a_witness_that_is_no_repository_is_a_domain_error(tmp_path: Path) -> None:
    with pytest.raises(GitOpsError, match="neither a file of checkpoint lines nor a Git repository"):
        read_witness(str(tmp_path / "nothing-here"))


def test_the_change_that_matters_is_listed_before_decoys() -> None:
    """Found red-teaming: sixteen decoy keys sorted before the one real change pushed it out of the record; removing
    the decoys afterwards was no drift, so no record named the change that stayed."""
    decoys = [DriftItem(f"/data/a{i:02d}", DriftKind.ADDED, None, "x") for i in range(MAX_FIELDS + 3)]
    real = DriftItem("/data/message", DriftKind.CHANGED, "hello", "evil")
    record = build_record(admission_request(), decision_of(*decoys, real), GIT, KEY, time=T0)
    assert record["fields"][0]["path"] == "/data/message"
    assert record["omittedPaths"] == [f"/data/a{i:02d}" for i in range(MAX_FIELDS - 1, MAX_FIELDS + 3)]
