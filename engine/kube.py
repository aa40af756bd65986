"""The Kubernetes API adapter: builds clients from a kubeconfig and turns transport failures into domain errors."""

from __future__ import annotations

from dataclasses import dataclass

import urllib3
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from .errors import ClusterUnreachable, KubeConfigError


@dataclass(frozen=True)
class KubeTarget:
    """Which cluster to talk to, as kubectl's --kubeconfig and --context name it (None: kubectl's defaults)."""

    kubeconfig: str | None = None
    context: str | None = None


def api_client(target: KubeTarget) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=target.kubeconfig, context=target.context, client_configuration=configuration
        )
    except (ConfigException, OSError, TypeError, ValueError) as e:
        where = target.kubeconfig or "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
        raise KubeConfigError(f"cannot load {where}: {e}; pass --kubeconfig/--context or set KUBECONFIG") from e
    configuration.retries = 1
    return client.ApiClient(configuration)


def server_version(api: client.ApiClient) -> str:
    try:
        info = client.VersionApi(api).get_code(_request_timeout=10)
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise ClusterUnreachable(
            f"the API server at {api.configuration.host} did not answer ({e}); check that the cluster runs "
            "and that --context/--kubeconfig point at it"
        ) from e
    return str(info.git_version)
