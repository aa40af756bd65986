# The gitops-webhook image that manifests/webhook/deployment.yaml runs (image: kubectl-gitops:0.1.0):
#   docker build -t kubectl-gitops:0.1.0 .
# The base images are build arguments (the defaults are the official ones); hack/image builds this same file with
# buildah on base images it makes from Debian's packages, where no registry is reachable.
# The webhook serves HTTPS with gunicorn's arbiter and uvicorn's worker (uvloop, httptools: wheels from PyPI, no
# compiler needed here); see webhook/server.py.
# kubectl (for `kubectl kustomize`) and helm are built from the same pinned Go modules as the test control plane.
# Their versions are the modules' (`kubectl version --client`, `helm version`): hack/gomod/ldflags.sh gives the same
# -ldflags as hack/local-cluster build.
ARG GO_IMAGE=golang:1.26-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${GO_IMAGE} AS tools
ENV CGO_ENABLED=0
WORKDIR /src
COPY hack/gomod/ldflags.sh ./
COPY hack/gomod/kubernetes/ kubernetes/
COPY hack/gomod/helm/ helm/
RUN cd kubernetes && go build -trimpath -tags=selinux,notest -ldflags="$(sh ../ldflags.sh kubernetes .)" \
      -o /out/kubectl k8s.io/kubernetes/cmd/kubectl
RUN cd helm && go build -trimpath -ldflags="$(sh ../ldflags.sh helm .)" -o /out/helm helm.sh/helm/v3/cmd/helm

FROM ${PYTHON_IMAGE}
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
