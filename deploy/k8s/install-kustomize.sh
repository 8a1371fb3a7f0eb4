#!/usr/bin/env bash
# Prints the path of the pinned kustomize, building it first if this clone has none yet.
#
# kustomize comes from the Go module proxy (`go install`, the ordinary Go client) and is
# cached under deploy/k8s/.bin/ (ignored by git), so a clean clone builds it once
# (about a minute on 2 cores) and every later run reuses it. GOTOOLCHAIN=local: the
# machine's own Go builds it, nothing else is downloaded.
set -euo pipefail
VERSION=v5.8.1
here=$(cd "$(dirname "$0")" && pwd)
bin=$here/.bin
target=$bin/kustomize-$VERSION
if [[ ! -x $target ]]; then
    if ! command -v go >/dev/null 2>&1; then
        echo "install-kustomize.sh: Go is needed to build kustomize $VERSION" >&2
        exit 1
    fi
    mkdir -p "$bin"
    tmp=$(mktemp -d "$bin/.build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "install-kustomize.sh: building kustomize $VERSION into $bin" >&2
    GOBIN=$tmp GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go install "sigs.k8s.io/kustomize/kustomize/v5@$VERSION" >&2
    mv "$tmp/kustomize" "$target"  # atomic: a concurrent run sees the whole binary or none
fi
echo "$target"
