"""Memory a large load freed, given back to the system: glibc's allocator keeps freed pages in the process unless
asked, so a webhook that probed 20,000 objects would hold what their answers took for good (bench/webhook_memory.py
measures it)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim: Callable[[int], int] | None = getattr(ctypes.CDLL(name), "malloc_trim", None)
    except OSError:
        return None
    return trim


def give_back() -> None:
    """Collects garbage, then returns the free heap to the system where the C library can (glibc's malloc_trim)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
