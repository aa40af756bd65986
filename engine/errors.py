"""Domain errors: each says what happened and what to do next, and keeps the underlying library's message."""


class GitOpsError(Exception):
    """Base of every error the engine raises on purpose."""


class KubeConfigError(GitOpsError):
    """The kubeconfig or context cannot be loaded."""


class ClusterUnreachable(GitOpsError):
    """The API server did not answer."""
