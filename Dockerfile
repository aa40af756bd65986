# The gitops-webhook image that manifests/webhook/deployment.yaml runs (image: kubectl-gitops:0.1.0):
#   docker build -t kubectl-gitops:0.1.0 .
# The webhook serves HTTPS with gunicorn's arbiter and uvicorn's worker (uvloop, httptools: wheels from PyPI, no
# compiler needed here); see webhook/server.py.
# kubectl (for `kubectl kustomize`) and helm are built from the same pinned Go modules as the test control plane.
FROM golang:1.26-bookworm AS tools
WORKDIR /src
COPY hack/gomod/kubernetes/ kubernetes/
COPY hack/gomod/helm/ helm/
RUN cd kubernetes && go build -trimpath -ldflags="-s -w" -o /out/kubectl k8s.io/kubernetes/cmd/kubectl
RUN cd helm && go build -trimpath -ldflags="-s -w" -o /out/helm helm.sh/helm/v3/cmd/helm

FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=tools /out/kubectl /out/helm /usr/local/bin/
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine/ engine/
COPY plugin/ plugin/
COPY webhook/ webhook/
COPY controller/ controller/
COPY manifests/ manifests/
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
# The Deployment runs as this user with a read-only root file system; /tmp is an emptyDir.
USER 65532:65532
ENV HOME=/tmp XDG_CACHE_HOME=/tmp/cache
ENTRYPOINT ["gitops-webhook"]
