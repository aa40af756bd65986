"""engine.core.history: a SyncRecord's round trip, its digests, retention, and which sync was live when."""

from __future__ import annotations

import base64
import datetime
import json

import pytest

from engine.core.history import (
    SUMMARY,
    CommitInfo,
    InvalidRecord,
    ObjectAction,
    RecordedObject,
    Result,
    Retention,
    SyncRecord,
    Trigger,
    counts_of,
    expired,
    live_at,
    object_digest,
    parse_record,
    record_object,
    render_digest,
    result_of,
)
from engine.core.objects import ObjectKey

T0 = datetime.datetime(2026, 11, 23, 9, 0, tzinfo=datetime.UTC)
WEB = ObjectKey("apps", "Deployment", "shop", "web")
PASSWORD = "correct-horse-battery-staple"


def secret(value: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"},
        "stringData": {"password": value},
    }


def record(record_id: int, finished: datetime.datetime, result: Result = Result.SUCCEEDED, **kw: object) -> SyncRecord:
    objects = (RecordedObject(WEB, ObjectAction.CONFIGURED, "d" * 64),)
    return SyncRecord(
        application="shop",
        namespace="gitops-system",
        id=record_id,
        commit=CommitInfo(f"{record_id:040x}", f"commit {record_id}", "dev <dev@example.com>", "2026-11-23T08:00:00Z"),
        trigger=Trigger.MANUAL,
        user="alice",
        started=finished - datetime.timedelta(seconds=2),
        finished=finished,
        result=result,
        render_digest="r" * 64,
        objects=objects,
        counts=counts_of(objects),
        **kw,  # type: ignore[arg-type]
    )


def test_a_record_reads_back_as_it_was_written() -> None:
    written = record(7, T0, errors=("web: refused",), reason="bad release")
    obj = record_object(written)
    assert obj["metadata"]["name"] == "shop-7"
    assert obj["metadata"]["labels"] == {"gitops.kubectl-gitops.io/application": "shop"}
    read = parse_record(json.loads(json.dumps(obj)))
    assert read == SyncRecord(**{**written.__dict__, "name": "shop-7"})
    summary_only = parse_record(obj, with_objects=False)
    assert summary_only.objects == ()
    assert summary_only.changed == 1


def test_no_secret_value_is_stored_and_its_digest_does_not_depend_on_it() -> None:
    one, other = object_digest(secret(PASSWORD)), object_digest(secret("another value"))
    assert one == other  # a digest of a Secret cannot be checked against guessed values
    assert one != object_digest({**secret(PASSWORD), "stringData": {"user": PASSWORD}})  # its keys still count
    stored = record_object(record(1, T0, errors=()))
    assert PASSWORD not in json.dumps(stored)


def test_the_render_digest_covers_keys_and_digests_in_key_order() -> None:
    a, b = ObjectKey("", "ConfigMap", "shop", "a"), ObjectKey("", "ConfigMap", "shop", "b")
    assert render_digest({a: "1", b: "2"}) == render_digest({b: "2", a: "1"})
    assert render_digest({a: "1", b: "2"}) != render_digest({a: "2", b: "1"})


@pytest.mark.parametrize(
    ("actions", "result"),
    [
        ([ObjectAction.UNCHANGED, ObjectAction.CREATED], Result.SUCCEEDED),
        ([ObjectAction.FAILED, ObjectAction.CONFIGURED], Result.PARTIAL),
        ([ObjectAction.FAILED, ObjectAction.UNCHANGED], Result.FAILED),
        ([], Result.SUCCEEDED),
    ],
)
def test_result_of(actions: list[ObjectAction], result: Result) -> None:
    assert result_of([RecordedObject(WEB, a) for a in actions]) is result


def test_retention_keeps_a_count_an_age_or_both_and_always_the_newest() -> None:
    records = [record(i, T0 + datetime.timedelta(days=i)) for i in range(1, 11)]  # ids 1..10, a day apart
    now = T0 + datetime.timedelta(days=10)
    assert [r.id for r in expired(records, Retention(records=3), now)] == [7, 6, 5, 4, 3, 2, 1]
    assert [r.id for r in expired(records, Retention(records=0, max_age=datetime.timedelta(days=2)), now)] == [
        7, 6, 5, 4, 3, 2, 1,
    ]  # fmt: skip
    assert [r.id for r in expired(records, Retention(records=5, max_age=datetime.timedelta(days=8)), now)] == [
        5, 4, 3, 2, 1,
    ]  # fmt: skip
    old = T0 + datetime.timedelta(days=365)
    assert [r.id for r in expired(records, Retention(records=0, max_age=datetime.timedelta(days=1)), old)] == list(
        range(9, 0, -1)
    )  # the newest stays, however old: it is what is live
    assert expired(records, Retention(records=0), now) == []


def test_the_sync_live_at_a_time_is_the_newest_finished_by_then_that_changed_something() -> None:
    first, failed, second = (
        record(1, T0),
        record(2, T0 + datetime.timedelta(hours=1), Result.FAILED),
        record(3, T0 + datetime.timedelta(hours=2), Result.PARTIAL),
    )
    records = [second, failed, first]
    assert live_at(records, T0 - datetime.timedelta(seconds=1)) is None
    assert live_at(records, T0) == first
    assert live_at(records, T0 + datetime.timedelta(minutes=90)) == first  # the failed sync changed nothing
    assert live_at(records, T0 + datetime.timedelta(hours=3)) == second


@pytest.mark.parametrize(
    "damage",
    [
        lambda o: o["metadata"]["annotations"].pop(SUMMARY),
        lambda o: o["metadata"]["annotations"].update({SUMMARY: "{not json"}),
        lambda o: o.update(objects="not base64!"),
        lambda o: o.update(objects=base64.b64encode(b"not gzip").decode()),
        lambda o: o["metadata"]["annotations"].update({SUMMARY: json.dumps({"id": "x"})}),
    ],
)
def test_a_damaged_record_is_a_clear_error(damage: object) -> None:
    obj = record_object(record(1, T0))
    damage(obj)  # type: ignore[operator]
    with pytest.raises(InvalidRecord, match="SyncRecord 'shop-1' cannot be read"):
        parse_record(obj)
