"""RFC 3161 trusted time for checkpoints (issue 18, item 3).

What is time-stamped: the checkpoint's note body, the text its signatures sign (origin,
size, root hash, each line ending in a newline), without any signature line. The message
imprint is SHA-256 of those bytes, so witnesses' cosignatures added to the note later
never change it, and the token proves that the tree (size, root) existed at its genTime.

The token is stored as the TSA's whole reply (TimeStampResp, DER), as `openssl ts -reply`
writes it and `openssl ts -verify -in FILE` reads it; the bundle carries it as
`checkpoint.tsr`, listed in the signed manifest (so the attestation covers it too).

Asking (`request_timestamp`): a nonce and certReq true; the reply must be granted, for
the imprint and the nonce asked. Its signature is checked by whoever verifies the bundle,
against the CA they trust (`check_timestamp`, `verify --tsa-cert CA.pem`): the signature,
the chain to the CA at the token's genTime (an expired or not yet valid TSA certificate
fails), the TSA certificate's critical extendedKeyUsage timeStamping, and the imprint.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from streams.errors import ConfigError, ConsentwatchError
from streams.evidence.cosignature import note_parts

__all__ = ["MAX_TOKEN_BYTES", "TOKEN_FILE", "TimestampError", "check_bundle_timestamp",
           "check_timestamp",
           "load_tsa_certs", "note_digest", "request_timestamp"]

TOKEN_FILE = "checkpoint.tsr"
MAX_TOKEN_BYTES = 1 << 20
_TIMEOUT_S = 30.0


class TimestampError(ConsentwatchError):
    """The TSA could not be asked, or its reply is not a time-stamp of what was asked."""


def note_digest(note: str) -> bytes:
    """SHA-256 of the note body (the signed text, without signature lines)."""
    body, _lines = note_parts(note)
    return hashlib.sha256(body.encode()).digest()


def request_timestamp(url: str, note: str, *, timeout: float = _TIMEOUT_S) -> bytes:
    """The DER reply of the TSA at `url` time-stamping `note`'s body; TimestampError when
    the TSA cannot be reached or its reply is not granted for this imprint and nonce."""
    from rfc3161_client import (
        HashAlgorithm,
        PKIStatus,
        TimestampRequestBuilder,
        decode_timestamp_response,
    )

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"--tsa-url {url!r} is not an http(s) URL")
    digest = note_digest(note)
    request = (TimestampRequestBuilder().data(_body(note))
               .hash_algorithm(HashAlgorithm.SHA256).nonce(nonce=True)
               .cert_request(cert_request=True).build())
    http = urllib.request.Request(url, data=request.as_bytes(), method="POST",
                                  headers={"Content-Type": "application/timestamp-query"})
    try:
        with urllib.request.urlopen(http, timeout=timeout) as answer:
            kind = answer.headers.get("Content-Type", "")
            reply: bytes = answer.read(MAX_TOKEN_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TimestampError(f"the TSA {url} could not be asked: {_reason(exc)}") from None
    if kind.split(";")[0].strip() != "application/timestamp-reply":
        raise TimestampError(f"the TSA {url} answered {kind or 'no content type'}, not "
                             "application/timestamp-reply")
    if len(reply) > MAX_TOKEN_BYTES:
        raise TimestampError(f"the TSA {url} answered more than {MAX_TOKEN_BYTES} bytes")
    try:
        response = decode_timestamp_response(reply)
    except ValueError as exc:
        raise TimestampError(f"the TSA {url} answered no time-stamp reply: {exc}") from None
    if response.status not in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
        raise TimestampError(f"the TSA {url} refused: status {response.status}")
    info = response.tst_info
    if info.message_imprint.message != digest:
        raise TimestampError(f"the TSA {url} time-stamped another digest")
    if info.nonce != request.nonce:
        raise TimestampError(f"the TSA {url} answered with another nonce")
    return reply


def load_tsa_certs(path: Path) -> list[x509.Certificate]:
    """The certificates (PEM, one or more) of `--tsa-cert`; ConfigError when none."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError(f"{path} holds no PEM certificate")
    return certs


@dataclass(frozen=True, slots=True)
class Stamped:
    """A token that verified: when, by whom."""

    gen_time: datetime
    tsa: str


def check_timestamp(token: bytes | None, note: str | None, trusted: list[x509.Certificate],
                    trusted_name: str) -> tuple[list[str], str]:
    """What `verify --tsa-cert` says of a bundle's token and checkpoint note (None when it
    did not verify): (failure lines, OK line)."""
    if token is None:
        return [f"{TOKEN_FILE}: missing: the bundle carries no time-stamp token (--tsa-cert "
                "was given)"], ""
    if note is None:
        return [f"{TOKEN_FILE}: no verified checkpoint, so the time-stamp proves nothing"], ""
    try:
        stamped = _verify(token, note, trusted)
    except TimestampError as exc:
        return [f"{TOKEN_FILE}: {exc}"], ""
    return [], (f"OK time-stamp: the checkpoint existed at {_utc(stamped.gen_time)} "
                f"(RFC 3161 token by {stamped.tsa!r}, verified against {trusted_name})")


def check_bundle_timestamp(path: Path, note: str | None,
                           tsa_cert: Path) -> tuple[list[str], str]:
    """`verify --tsa-cert CA.pem` of the bundle at `path` whose checkpoint note verified
    (`note`; None when it did not): (failure lines, OK line). ConfigError when CA.pem
    holds no certificate."""
    from streams.evidence.bundle import BundleError, open_bundle

    trusted = load_tsa_certs(tsa_cert)
    try:
        with open_bundle(path) as files:
            token = (files.read(TOKEN_FILE, MAX_TOKEN_BYTES) if TOKEN_FILE in files.sizes
                     else None)
    except BundleError as exc:
        return [f"{TOKEN_FILE}: {exc}"], ""
    return check_timestamp(token, note, trusted, tsa_cert.name)


def _verify(token: bytes, note: str, trusted: list[x509.Certificate]) -> Stamped:
    from rfc3161_client import VerificationError, VerifierBuilder, decode_timestamp_response

    try:
        response = decode_timestamp_response(token)
        info = response.tst_info
        gen_time = info.gen_time
        embedded = [x509.load_der_x509_certificate(der)
                    for der in response.signed_data.certificates]
        imprint = info.message_imprint.message
        signer = _signer(response, embedded)
    except Exception as exc:  # the ASN.1 and X.509 parsers raise several kinds: bad bytes
        raise TimestampError(f"not a time-stamp reply (truncated or corrupt?): "
                             f"{_reason(exc)}") from None
    if gen_time.tzinfo is None:
        gen_time = gen_time.replace(tzinfo=UTC)
    if imprint != note_digest(note):
        raise TimestampError("the token time-stamps another digest, not this bundle's "
                             "checkpoint")
    if signer is not None:
        valid_from = signer.not_valid_before_utc
        valid_to = signer.not_valid_after_utc
        if not valid_from <= gen_time <= valid_to:
            raise TimestampError(
                f"the TSA certificate was not valid at the token's time {_utc(gen_time)} "
                f"(valid from {_utc(valid_from)} to {_utc(valid_to)})")
    builder = VerifierBuilder()
    for cert in trusted:
        builder = builder.add_root_certificate(cert)
    # Only the certificates given are trusted: rfc3161-client trusts its intermediates as
    # much as its roots, so the token's own certificates are never added (they serve
    # only to build the chain inside the PKCS #7 check).
    try:
        builder.build().verify(response, note_digest(note))
    except (VerificationError, ValueError, TypeError) as exc:
        reason = _reason(exc)
        if "certificate verify error" in reason:
            reason = "the TSA's certificate does not chain to the certificate given"
        elif "signature" in reason.lower():
            reason = "the TSA's signature does not verify"
        raise TimestampError(f"the token does not verify: {reason}") from None
    tsa = signer.subject.rfc4514_string() if signer is not None else "an unnamed TSA"
    return Stamped(gen_time, tsa)


def _signer(response: object, embedded: list[x509.Certificate]) -> x509.Certificate | None:
    """The embedded certificate the SignerInfo names, if any."""
    infos = list(response.signed_data.signer_infos)  # type: ignore[attr-defined]
    if len(infos) != 1:
        return None
    info = infos[0]
    for cert in embedded:
        if cert.issuer == info.issuer and cert.serial_number == info.serial_number:
            return cert
    return None


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _body(note: str) -> bytes:
    body, _lines = note_parts(note)
    return body.encode()


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason if reason is not None else exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
