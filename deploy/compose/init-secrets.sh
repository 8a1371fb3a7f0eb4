#!/usr/bin/env bash
# Creates the local stack's secrets, once, in deploy/compose/secrets/ (or DIR):
#   consentwatch.key, consentwatch.pub   the ledger's Ed25519 signing key pair
#                                        (`consentwatch keys generate`)
#   postgres-password                    the ledger database's password (random)
#   pseudonym.key                        the workers' HMAC-SHA256 key for pseudonyms in
#                                        findings' evidence (32 random bytes, hex)
# Existing files are kept. The folder is ignored by git: these are development
# secrets for one laptop. Compose bind-mounts a file secret with its owner and mode
# as they are, and the containers run as other users (consentwatch 10001, postgres),
# so the files (all three secrets) are made readable to them (0644).
#   usage: deploy/compose/init-secrets.sh [DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/secrets}
root=$(cd "$here/../.." && pwd)
consentwatch=${CONSENTWATCH:-}
if [[ -z $consentwatch ]]; then
    if [[ -x $root/.venv/bin/consentwatch ]]; then
        consentwatch=$root/.venv/bin/consentwatch
    elif command -v consentwatch >/dev/null 2>&1; then
        consentwatch=$(command -v consentwatch)
    else
        echo "init-secrets.sh: no consentwatch command: run ./dev setup first" >&2
        exit 1
    fi
fi
mkdir -p "$out"
if [[ ! -e $out/consentwatch.key ]]; then
    "$consentwatch" keys generate --out "$out" >/dev/null
    echo "init-secrets.sh: wrote $out/consentwatch.key and consentwatch.pub" >&2
fi
if [[ ! -e $out/postgres-password ]]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' \
        >"$out/postgres-password")
    echo "init-secrets.sh: wrote $out/postgres-password" >&2
fi
if [[ ! -e $out/pseudonym.key ]]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' \
        >"$out/pseudonym.key")
    echo "init-secrets.sh: wrote $out/pseudonym.key" >&2
fi
chmod 0644 "$out/consentwatch.key" "$out/postgres-password" "$out/pseudonym.key"
