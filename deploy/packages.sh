#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo use beside Kafka:
#   prometheus (prometheus, promtool), prometheus-alertmanager (amtool), postgresql,
#   chromium (headless, renders the evidence report to a screenshot in tests/evidence/test_report.py),
#   chromium-driver (chromedriver: the review desk's browser tests in tests/desk/ drive Chromium),
#   golang-go (when no Go is installed: tests/reference, the Go reference check of bundles),
#   openssl (`openssl ts -reply`: the local time-stamping authority of deploy/tsa/tsa.sh).
# Idempotent and quick when they are already there. Needs root (CI runs as root).
set -euo pipefail
packages=(prometheus prometheus-alertmanager postgresql chromium chromium-driver openssl)
# Go builds tests/reference (the reference implementations of checkpoints and proofs):
# Debian's golang-go only when no Go is installed (the one in /usr/local/go is kept).
if ! command -v go >/dev/null 2>&1 && [[ ! -x /usr/local/go/bin/go ]]; then
    packages+=(golang-go)
fi
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "deploy/packages.sh: installing ${missing[*]} needs root" >&2
    exit 1
fi
echo "deploy/packages.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
