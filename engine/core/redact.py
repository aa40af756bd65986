"""Keeps Secret values out of error text: every form a value can take in a message is cut, whatever made the message.

An error about a Secret can quote its values: server-side apply answers a value of the wrong type with
`expected string, got &value.valueUnstructured{Value:12345}`, a decoding error may quote the decoded bytes, a
message may JSON-quote or base64-encode them. `scrub` is a pure function over the text and the forms of the values
(`secret_forms`); `SEEN` keeps the forms of every Secret this process has sent to the API server, and every
GitOpsError's text goes through it (engine.core.errors), so that no error leaves through the CLI, /readyz, a log line or
an Application's status with a value in it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

REDACTED = "<redacted>"
VALUE_REDACTED = "<a value, redacted>"
SHORT = 6  # a form shorter than this is cut only where it stands alone (not inside a longer word or number)
_WORD = "A-Za-z0-9+/="  # what a short form must not touch on either side to count as standing alone
_GO_VALUE = re.compile(r"&?(?:value\.)?valueUnstructured\{")


def is_secret_like(obj: Any) -> bool:
    """A Secret, whatever its apiVersion says: a wrong apiVersion must not make its values quotable."""
    return isinstance(obj, dict) and obj.get("kind") == "Secret"


def _leaves(value: Any) -> Iterator[Any]:
    """The scalars inside a value: a map or list under `data` is itself wrong, and each scalar in it may be secret."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif value is not None:
        yield value


def _text_forms(text: str) -> set[str]:
    """A string as messages quote it: raw, JSON- and Python-escaped, as Go renders bytes (%v and %#v)."""
    forms = {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], repr(text)[1:-1]}
    raw = text.encode()
    if raw:
        forms.add(" ".join(str(b) for b in raw))  # Go %v of []byte: [115 51 99 ...]
        forms.add(", ".join(f"0x{b:x}" for b in raw))  # Go %#v of []byte: []byte{0x73, 0x33, ...}
    return forms


def _scalar_forms(value: Any) -> set[str]:
    if isinstance(value, bool):
        return {str(value), str(value).lower()}
    if isinstance(value, int):
        return {str(value)}
    if isinstance(value, float):
        forms = {repr(value), format(value, "g")}
        if value.is_integer():
            forms.add(str(int(value)))
        return forms
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    forms = _text_forms(text)
    forms.add(base64.b64encode(text.encode()).decode())  # stringData as it is stored in data
    try:
        decoded = base64.b64decode(text, validate=True).decode()
    except (binascii.Error, ValueError):
        decoded = ""
    if decoded:
        forms |= _text_forms(decoded)  # data as the application reads it
    return forms


def secret_forms(obj: Any) -> set[str]:
    """Every form of every value under `data` and `stringData` of a Secret (nothing for another object)."""
    if not is_secret_like(obj):
        return set()
    forms: set[str] = set()
    for field in ("data", "stringData"):
        values = obj.get(field)
        for leaf in _leaves(values if isinstance(values, dict) else [values]):
            forms |= _scalar_forms(leaf)
    return {f for f in forms if f.strip()}


def _cut_go_values(text: str) -> str:
    """`&value.valueUnstructured{Value:...}` (Go's %#v of a value of the wrong type) cut whole, braces balanced."""
    out: list[str] = []
    pos = 0
    while (match := _GO_VALUE.search(text, pos)) is not None:
        out.append(text[pos : match.start()])
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append(VALUE_REDACTED)
        pos = i
    out.append(text[pos:])
    return "".join(out)


def _pattern(forms: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression for the forms, longest first (a form inside another is cut with it)."""
    parts = []
    for form in sorted(set(forms), key=lambda f: (-len(f), f)):
        escaped = re.escape(form)
        parts.append(escaped if len(form) >= SHORT else f"(?<![{_WORD}]){escaped}(?![{_WORD}])")
    return re.compile("|".join(parts)) if parts else None


def scrub(text: str, forms: Iterable[str] = ()) -> str:
    """`text` with Go's renderings of wrongly typed values cut, and every one of `forms` replaced by <redacted>."""
    text = _cut_go_values(text)
    # Only the forms that occur go into the expression: a substring test per form is fast even for many thousands
    # of forms, an alternation of all of them would not be.
    pattern = _pattern(f for f in forms if f in text)
    return pattern.sub(REDACTED, text) if pattern is not None else text


def scrub_for(text: str, obj: Any) -> str:
    """`text`, an error about `obj`, with `obj`'s values cut when it is a Secret."""
    return scrub(text, secret_forms(obj))


GRAM = 4  # SeenSecrets indexes its forms by their first GRAM characters


class SeenSecrets:
    """The forms of every Secret value this process has sent to the API server (thread-safe). Indexed by their
    first characters, so that scrubbing a text costs about its length, not the number of values seen."""

    def __init__(self) -> None:
        self._forms: set[str] = set()
        self._by_prefix: dict[str, list[str]] = {}
        self._short: list[str] = []
        self._lock = threading.Lock()

    def remember(self, obj: Any) -> set[str]:
        """Keeps the forms of `obj`'s values (when it is a Secret) and returns them."""
        forms = secret_forms(obj)
        with self._lock:
            for form in forms - self._forms:
                self._forms.add(form)
                if len(form) < GRAM:
                    self._short.append(form)
                else:
                    self._by_prefix.setdefault(form[:GRAM], []).append(form)
        return forms

    def scrub(self, text: str) -> str:
        with self._lock:
            grams = {text[i : i + GRAM] for i in range(len(text) - GRAM + 1)}
            candidates = [f for gram in grams for f in self._by_prefix.get(gram, ())] + self._short
        return scrub(text, candidates)


SEEN = SeenSecrets()
