"""The one error type of the local control plane tool: a message a person can act on."""


class ClusterError(Exception):
    """Something the local control plane tool could not do, said so that the user knows what to do next."""
