"""Ed25519 key files: the ledger and `export` sign with the private key, `verify` needs
only the public one.

Private key: PEM PKCS#8, unencrypted, created with mode 0600 and never overwritten
(losing or silently replacing a signing key would orphan every checkpoint it signed).
Public key: PEM SubjectPublicKeyInfo, safe to hand to a regulator. Errors are one-line
ConfigErrors that name the file but never echo its content.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from streams.errors import ConfigError

__all__ = [
    "KEY_NAME",
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "public_key_bytes",
]

PRIVATE_KEY_FILE = "consentwatch.key"
PUBLIC_KEY_FILE = "consentwatch.pub"
# The C2SP signed-note key name checkpoints and bundles are signed under (no spaces,
# no '+'). The key id binds it to the public key, so one name serves every key pair.
KEY_NAME = "consentwatch"

_log = logging.getLogger(__name__)


def generate_keypair(out_dir: Path | str) -> tuple[Path, Path]:
    """Write `consentwatch.key` (0600) and `consentwatch.pub` into `out_dir`.

    Refuses (ConfigError) if either file exists; creates `out_dir` (0700, whatever the
    umask) if needed. An existing `out_dir` keeps its mode.
    """
    directory = Path(out_dir)
    key_path, pub_path = directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE
    for path in (key_path, pub_path):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a key")
    _make_private_dir(directory)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(key_path, private_pem, 0o600)
    try:
        _write_new(pub_path, public_pem, 0o644)
    except ConfigError:
        key_path.unlink()
        raise
    return key_path, pub_path


def _make_private_dir(directory: Path) -> None:
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot create {directory}: {exc.strerror}") from exc
    os.chmod(directory, 0o700)  # mkdir's mode passes through the umask


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise ConfigError(f"{path} exists; refusing to overwrite a key") from exc
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # the umask may have narrowed it; 0600 must stay exactly 0600


def _read(path: Path | str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def load_private_key(path: Path | str,
                     warn: Callable[[str], None] | None = None) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM (PKCS#8) file `path`.

    A key file other users can read or write is still used (a group-readable key is how
    Kubernetes hands it to a container) after a one-line warning, to `warn` or the log.
    """
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # The library's message could quote the file; say only what is wrong.
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from exc
    except UnsupportedAlgorithm as exc:
        raise ConfigError(f"{path} is not a usable private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    _warn_if_exposed(Path(path), warn or _log.warning)
    return key


def _warn_if_exposed(path: Path, warn: Callable[[str], None]) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o027:  # group may read it; others or group write, or others read, may not
        warn(f"private key {path} has mode {mode:04o}: other users can read or replace it "
             f"(chmod 600 {path})")


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM (SubjectPublicKeyInfo) file `path`."""
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        hint = " (this is a private key)" if b"PRIVATE KEY" in data else ""
        raise ConfigError(f"{path} is not a PEM public key{hint}") from exc
    except UnsupportedAlgorithm as exc:
        raise ConfigError(f"{path} is not a usable public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of RFC 8032 (what key ids and fingerprints are computed over)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
