"""Git credentials: given to git through its environment, never shown."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from engine.adapters.source import GitCredentials
from engine.core import redact


def test_https_credentials_are_a_header_in_the_environment_and_not_in_a_repr() -> None:
    creds = GitCredentials(username="bot", password="t0ken-9f8e7d6c", name="gitops-system/git")
    assert "t0ken" not in repr(creds)
    with creds.environment() as env:
        assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
        assert env["GIT_CONFIG_VALUE_0"] == "Authorization: Basic " + base64.b64encode(b"bot:t0ken-9f8e7d6c").decode()
        assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert "t0ken-9f8e7d6c" not in redact.SEEN.scrub("fatal: token t0ken-9f8e7d6c refused")


def test_an_ssh_key_lives_in_a_private_file_for_the_fetch_only_and_unknown_hosts_are_refused() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
    creds = GitCredentials(identity=key, known_hosts="git.example ssh-ed25519 AAAA\n")
    with creds.environment() as env:
        command = env["GIT_SSH_COMMAND"]
        assert "StrictHostKeyChecking=yes" in command
        path = Path(command.split("-i ")[1].split()[0])
        assert path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert oct(os.stat(path.parent).st_mode & 0o777) == "0o700"
    assert not path.exists()
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in redact.SEEN.scrub(f"key {key} rejected")
