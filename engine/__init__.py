"""The engine both front doors share: what Git says, what the cluster has, and how they differ."""

__version__ = "0.1.0"
