"""Domain errors: each says what happened and what to do next, and keeps the underlying library's message."""

from .redact import SEEN


class GitOpsError(Exception):
    """Base of every error the engine raises on purpose. Its text never holds a Secret value this process has sent
    (engine.core.redact): the CLI, /readyz, the logs and an Application's status all show an error through str()."""

    def __str__(self) -> str:
        return SEEN.scrub(super().__str__())


class KubeConfigError(GitOpsError):
    """The kubeconfig or context cannot be loaded."""


class ClusterUnreachable(GitOpsError):
    """The API server did not answer."""


class ManifestError(GitOpsError):
    """Git's manifests cannot be used as they are; the message names the file and document."""


class SourceError(GitOpsError):
    """The Git repository or revision cannot be read."""


class RenderError(GitOpsError):
    """Kustomize or Helm failed to render; the message keeps the tool's own output."""


class ApiError(GitOpsError):
    """The API server refused a request; the message keeps the server's own reason (without the values of the
    Secret it was about: engine.adapters.kube scrubs it where it is formed)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class ApplicationNotFound(GitOpsError):
    """No Application of that name."""
