"""How the engine writes paths and values for people and for JSON Patch: JSON pointer tokens (RFC 6901) and values
shortened for a message."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def escape(token: object) -> str:
    """One JSON pointer token: `~` as `~0`, `/` as `~1`."""
    return str(token).replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def pointer(tokens: Iterable[object]) -> str:
    """The JSON pointer of these tokens (keys and indexes), each escaped."""
    return "".join("/" + escape(t) for t in tokens)


def tokens(pointer: str) -> list[str]:
    """The unescaped tokens of a JSON pointer ("" is the whole document)."""
    return [unescape(t) for t in pointer.split("/")[1:]] if pointer else []


def shorten(text: str, limit: int) -> str:
    """`text` when it has at most `limit` characters; otherwise its beginning and "...", `limit` characters in all."""
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def shown(value: Any, limit: int, *, separators: tuple[str, str] | None = None) -> str:
    """A value as a message shows it: "(absent)", a string as it is, anything else as sorted JSON; shortened."""
    if value is None:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value, separators=separators, sort_keys=True)
    return shorten(text, limit)
