#!/usr/bin/env bash
# Prints the path of the CRD validator script, installing it first if needed.
#
# The Prometheus Operator's CRD schemas come compiled in the npm package
# @kubernetes-models/prometheus-operator (pinned, with its dependencies, by
# crd-validator/package-lock.json). `npm ci` installs them under deploy/k8s/.bin/
# (ignored by git), once per lock file; later runs reuse them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$here/crd-validator
digest=$(cat "$src/package-lock.json" "$src/validate.mjs" | sha256sum | cut -c1-16)
target=$here/.bin/crd-validator-$digest
if [[ ! -f $target/.installed ]]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-crd-validator.sh: npm (Node.js) is needed" >&2
        exit 1
    fi
    mkdir -p "$target"
    cp "$src/package.json" "$src/package-lock.json" "$src/validate.mjs" "$target/"
    echo "install-crd-validator.sh: npm ci in $target" >&2
    (cd "$target" && npm ci --no-audit --no-fund --loglevel=error >&2)
    touch "$target/.installed"
fi
echo "$target/validate.mjs"
