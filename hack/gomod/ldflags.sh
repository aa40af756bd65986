#!/bin/sh
# The -ldflags that give kubectl and helm their real versions, read from the committed wrapper modules:
#   ldflags.sh kubernetes DIR | ldflags.sh helm DIR
# The same flags as hack/localcluster/build.py (version_ldflags, helm_ldflags); the Dockerfile builds with this,
# where there is no Python.
set -eu
required() { sed -n "s#^[[:space:]]*\(require[[:space:]]*\)\{0,1\}$2 \(v[^[:space:]]*\).*#\2#p" "$1/go.mod" | head -n 1; }
case "$1" in
  kubernetes)
    version="$(required "$2" k8s.io/kubernetes)"
    minor="$(echo "$version" | cut -d. -f2)"
    flags="-s -w"
    for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      flags="$flags -X $package.gitVersion=$version -X $package.gitMajor=1 -X $package.gitMinor=$minor"
      flags="$flags -X $package.gitTreeState=clean -X $package.buildDate=1970-01-01T00:00:00Z"
    done
    ;;
  helm)
    module=helm.sh/helm/v3
    version="$(required "$2" "$module")"
    client_go_minor="$(required "$2" k8s.io/client-go | cut -d. -f2)"
    flags="-s -w -X $module/internal/version.version=$version -X $module/internal/version.gitTreeState=clean"
    for package in pkg/lint/rules pkg/chartutil; do
      flags="$flags -X $module/$package.k8sVersionMajor=1 -X $module/$package.k8sVersionMinor=$client_go_minor"
    done
    ;;
  *) echo "ldflags.sh: give kubernetes or helm, then the module's directory" >&2; exit 2 ;;
esac
[ -n "$version" ] || { echo "ldflags.sh: no version in $2/go.mod" >&2; exit 1; }
echo "$flags"
