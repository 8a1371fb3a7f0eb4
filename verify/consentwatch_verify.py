"""`consentwatch-verify BUNDLE --public-key KEY [--since OLD [--proof FILE]]
[--witness-key FILE ... [--require-witnesses N]] [--tsa-cert CA.pem]`:
`consentwatch verify` on its own.

The same checks and the same output as `consentwatch verify` (streams.evidence.verify),
with only the standard library for the command line: OK and exit 0, or one
`FAIL <file>: <what>` line per problem and exit 1; a usage error is one line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from streams.errors import ConsentwatchError
from streams.evidence.consistency import verify_since
from streams.evidence.cosignature import check_witnesses, load_witness_keys
from streams.evidence.keys import load_public_key
from streams.evidence.timestamp import check_bundle_timestamp
from streams.evidence.verify import check_bundle

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="consentwatch-verify",
        description="Verify a consentwatch evidence bundle (directory or .zip) offline.")
    parser.add_argument("bundle", type=Path, help="the bundle directory or OUT.zip")
    parser.add_argument("--public-key", type=Path, required=True,
                        help="the exporter's Ed25519 public key (PEM)")
    parser.add_argument("--since", type=Path, metavar="OLD",
                        help="an earlier bundle of the same ledger: also prove the log only "
                             "grew from its checkpoint and kept its entries unchanged")
    parser.add_argument("--proof", type=Path, metavar="FILE",
                        help="with --since: a consistency proof from `consentwatch ledger "
                             "prove`, when OLD is not BUNDLE's previous export")
    parser.add_argument("--witness-key", type=Path, action="append", default=[],
                        metavar="FILE",
                        help="check the checkpoint's cosignatures by this witness (its "
                             "verifier key file); repeatable")
    parser.add_argument("--require-witnesses", type=int, metavar="N",
                        help="fail unless at least N of the --witness-key witnesses validly "
                             "cosigned (default: all of them)")
    parser.add_argument("--tsa-cert", type=Path, metavar="CA.pem",
                        help="check the checkpoint's RFC 3161 time-stamp token against "
                             "this CA certificate of the time-stamping authority (PEM)")
    args = parser.parse_args(argv)
    if args.proof is not None and args.since is None:
        parser.error("--proof needs --since OLD")
    required = len(args.witness_key) if args.require_witnesses is None else args.require_witnesses
    if not 0 <= required <= len(args.witness_key):
        parser.error(f"--require-witnesses {required} needs as many --witness-key")
    witnessed = stamped = ""
    try:
        witnesses = load_witness_keys(args.witness_key)
        key = load_public_key(args.public_key)
        if args.since is not None:
            report = verify_since(args.bundle, args.since, key, args.proof)
            failures, counts, new = report.failures, report.new.counts, report.new
        else:
            new = check_bundle(args.bundle, key)
            failures, counts = new.failures, new.counts
        if witnesses:
            problems, witnessed = check_witnesses(new.note, witnesses, required)
            failures = failures + problems
        if args.tsa_cert is not None:
            problems, stamped = check_bundle_timestamp(args.bundle, new.note, args.tsa_cert)
            failures = failures + problems
    except ConsentwatchError as exc:
        print(f"consentwatch-verify: {exc}", file=sys.stderr)
        return 2
    if failures:
        for failure in failures:
            print(f"FAIL {failure}")
        print(f"verification failed: {len(failures)} problem(s)", file=sys.stderr)
        return 1
    print(f"OK: {counts['findings']} findings, {counts['amendments']} amendments, "
          f"{counts.get('reviews', 0)} reviews and {counts.get('exceptions', 0)} exceptions "
          f"proven against the signed checkpoint of size {counts['checkpoint_size']}; "
          f"{counts['files']} files match the signed manifest")
    if args.since is not None:
        print(report.summary(args.since.name))
    if witnessed:
        print(witnessed)
    if stamped:
        print(stamped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
