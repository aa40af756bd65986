"""What a repository URL means where it is read: a host path names the files of whatever machine or pod reads it."""

from __future__ import annotations

HOST_PATH_HINT = (
    "a local path or file:// URL is read on the machine that reads it: inside a pod it names the pod's own files, "
    "not this machine's; serve the repository over the network (https://, ssh:// or git://) for a webhook or "
    "controller that runs in the cluster"
)


def is_host_path(url: str) -> bool:
    """True for a path or a file:// URL; false for anything git fetches over the network (scp-like `host:path`
    included)."""
    if url.startswith("file://"):
        return True
    if "://" in url:
        return False
    return url.startswith(("/", ".", "~")) or ":" not in url.split("/", 1)[0]
