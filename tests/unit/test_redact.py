"""engine.core.redact: no form of a Secret's value survives in error text; engine.core.errors and
engine.adapters.kube use it."""

from __future__ import annotations

import base64
import json
import logging
import sys
from typing import Any

import pytest

from engine.adapters.kube import _secret_forms
from engine.core import redact
from engine.core.errors import ApiError, GitOpsError
from engine.core.redact import REDACTED, VALUE_REDACTED, SeenSecrets, scrub, scrub_for, secret_forms


def secret(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}, **fields}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def go_bytes(text: str) -> str:
    return "[]byte{" + ", ".join(f"0x{b:x}" for b in text.encode()) + "}"


INT = secret(data={"password": 73918})
MAP = secret(data={"password": {"nested": "s3cr3t-x", "deeper": {"n": 41977}}})
STRING_DATA = secret(stringData={"token": 'p"a\\ss-wörd 9'})
DATA = secret(data={"token": b64("hunter2-hunter2")})
LIST = secret(stringData={"items": ["first-l1st-value", 55310]})
FLOAT = secret(data={"ratio": 88231.0})


@pytest.mark.parametrize(
    ("obj", "text", "leaked"),
    [
        # what server-side apply answers for a value of the wrong type: cut whole
        (INT, ".data.password: expected string, got &value.valueUnstructured{Value:73918}", "73918"),
        (
            MAP,
            '.data.password: expected string, got &value.valueUnstructured{Value:map[string]interface {}{"deeper":'
            'map[string]interface {}{"n":41977}, "nested":"s3cr3t-x"}}',
            "s3cr3t-x",
        ),
        # raw, str() of non-strings, Go's %v of a map, JSON of the object
        (INT, "cannot use 73918 here", "73918"),
        (MAP, "map[deeper:map[n:41977] nested:s3cr3t-x]", "s3cr3t-x"),
        (MAP, "map[deeper:map[n:41977] nested:s3cr3t-x]", "41977"),
        (MAP, json.dumps(MAP), "s3cr3t-x"),
        (MAP, str(MAP), "41977"),
        (STRING_DATA, json.dumps(STRING_DATA), json.dumps(STRING_DATA["stringData"]["token"])[1:-1]),
        (STRING_DATA, json.dumps(STRING_DATA, ensure_ascii=False), "wörd"),
        (STRING_DATA, repr(STRING_DATA["stringData"]), "wörd"),
        (STRING_DATA, 'value "p\\"a\\\\ss-wörd 9" is bad', "wörd"),
        # stringData as the server stores it (base64), and data decoded (what the application reads)
        (
            STRING_DATA,
            f"data.token: {b64(STRING_DATA['stringData']['token'])}",
            b64(STRING_DATA["stringData"]["token"]),
        ),
        (DATA, "illegal value hunter2-hunter2", "hunter2-hunter2"),
        (DATA, f"illegal base64 {DATA['data']['token']}", DATA["data"]["token"]),
        # Go's renderings of bytes
        (DATA, go_bytes("hunter2-hunter2"), "0x68, 0x75"),
        (DATA, "[104 117 110 116 101 114 50 45 104 117 110 116 101 114 50]", "104 117 110 116"),
        # a list where a string belongs, a float
        (LIST, "got [first-l1st-value 55310]", "first-l1st-value"),
        (LIST, "got [first-l1st-value 55310]", "55310"),
        (FLOAT, "got 88231 and 88231.0", "88231"),
    ],
)
def test_no_form_of_a_value_survives(obj: dict[str, Any], text: str, leaked: str) -> None:
    assert leaked in text  # the case is real
    scrubbed = scrub_for(text, obj)
    assert leaked not in scrubbed
    assert REDACTED in scrubbed or VALUE_REDACTED in scrubbed


def test_the_rest_of_the_message_stays() -> None:
    text = 'Secret "db" is invalid: .data.password: expected string, got &value.valueUnstructured{Value:73918}'
    assert scrub_for(text, INT) == f'Secret "db" is invalid: .data.password: expected string, got {VALUE_REDACTED}'


def test_go_renderings_are_cut_for_any_object_and_braces_are_balanced() -> None:
    text = "a: got &value.valueUnstructured{Value:map[k:{x}]}; b: got value.valueUnstructured{Value:7} end"
    assert scrub(text) == f"a: got {VALUE_REDACTED}; b: got {VALUE_REDACTED} end"
    assert scrub("cut off &value.valueUnstructured{Value:{{ 1234") == f"cut off {VALUE_REDACTED}"


def test_a_short_value_is_cut_only_where_it_stands_alone() -> None:
    obj = secret(data={"pin": 4821})
    assert scrub_for("pin 4821, port 48210, v4821x, 4821", obj) == f"pin {REDACTED}, port 48210, v4821x, {REDACTED}"
    long = secret(stringData={"p": "longvalue"})
    assert scrub_for("xlongvaluex", long) == f"x{REDACTED}x"


def test_other_objects_and_other_fields_are_left_alone() -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"message": "Hello from Git!"}}
    assert secret_forms(config) == set()
    assert scrub_for("Hello from Git!", config) == "Hello from Git!"
    assert secret_forms(secret(metadata={"name": "shop-db"}, type="Opaque")) == set()
    assert "shop-db" in scrub_for('Secret "shop-db" is invalid', secret(data={"k": "longvalue"}))


def test_a_secret_with_a_wrong_api_version_is_still_a_secret() -> None:
    obj = {"apiVersion": "v2", "kind": "Secret", "stringData": {"k": "s3cr3t-x"}}
    assert "s3cr3t-x" not in scrub_for("no v2 for s3cr3t-x", obj)


def test_seen_secrets_scrub_every_later_text() -> None:
    seen = SeenSecrets()
    assert seen.scrub("73918 s3cr3t-x") == "73918 s3cr3t-x"
    assert "73918" in seen.remember(INT)
    seen.remember(MAP)
    seen.remember({"kind": "ConfigMap", "data": {"a": "visible-value"}})
    assert seen.scrub("73918 s3cr3t-x visible-value") == f"{REDACTED} {REDACTED} visible-value"


def test_seen_secrets_find_short_and_long_values_among_many() -> None:
    seen = SeenSecrets()
    for n in range(500):
        seen.remember(secret(stringData={"k": f"value-number-{n:04d}"}))
    seen.remember(secret(data={"pin": 42, "word": "abc"}))
    text = "at value-number-0321 and value-number-9999, pin 42, word abc, not 420 nor abcd"
    assert seen.scrub(text) == f"at {REDACTED} and value-number-9999, pin {REDACTED}, word {REDACTED}, not 420 nor abcd"


def test_every_gitops_error_is_scrubbed_with_what_the_process_has_sent() -> None:
    value = "only-in-this-test-9c1f"
    redact.SEEN.remember(secret(stringData={"k": value}))
    for error in (GitOpsError(f"render failed near {value}"), ApiError(f"rejected {value}", 422)):
        assert value not in str(error)
        assert value not in f"{error}"
        assert REDACTED in str(error)


@pytest.mark.parametrize(
    ("path", "body", "value"),
    [
        ("/api/v1/namespaces/a/secrets/db", secret(data={"p": "whole-obj-val"}), "whole-obj-val"),
        ("/api/v1/namespaces/a/secrets", {"stringData": {"p": "created-val"}}, "created-val"),
        ("/api/v1/namespaces/a/secrets/db", {"data": {"p": "merge-patch-val"}}, "merge-patch-val"),
        ("/api/v1/namespaces/a/secrets/db", [{"op": "add", "path": "/data/p", "value": "json-patch-val"}], None),
    ],
)
def test_the_kube_client_takes_the_values_of_what_it_sends(path: str, body: Any, value: str | None) -> None:
    forms = _secret_forms(path, body)
    expected = value or "json-patch-val"
    assert expected in forms
    assert expected not in str(GitOpsError(f"x {expected} y"))


def test_the_kube_client_ignores_what_is_no_secret() -> None:
    assert _secret_forms("/api/v1/namespaces/a/configmaps/c", {"kind": "ConfigMap", "data": {"k": "v-1"}}) == set()
    assert _secret_forms("/apis/apps/v1/namespaces/a/deployments/d", [{"op": "remove", "path": "/x"}]) == set()


def test_the_webhooks_log_lines_are_scrubbed() -> None:
    from webhook.cli import ScrubSecrets

    value = "logged-only-here-77e1"
    redact.SEEN.remember(secret(stringData={"k": value}))
    try:
        raise ValueError(f"bad {value}")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed on %s", (value,), sys.exc_info())
    assert ScrubSecrets().filter(record)
    line = logging.Formatter().format(record)
    assert value not in line
    assert "failed on <redacted>" in line
    assert "ValueError: bad <redacted>" in line
