"""`consentwatch witness`: the witness's own commands (issue 18), run by someone other
than the ledger's operator, with its own key and state file (streams.evidence.witness).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["witness"]

PRIVATE_KEY_FILE = "witness.key"
VERIFIER_KEY_FILE = "witness.vkey"


@click.group()
def witness() -> None:
    """Cosign a ledger's checkpoints (C2SP tlog-cosignature), only ever as it grows."""


@witness.group("keys")
def witness_keys() -> None:
    """The witness's own Ed25519 key."""


@witness_keys.command("generate")
@click.option("--name", required=True, metavar="NAME",
              help="The witness's name, e.g. witness.example.org/w1 (no spaces, no '+').")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              metavar="DIR", help=f"Directory for {PRIVATE_KEY_FILE} and {VERIFIER_KEY_FILE}.")
def generate(name: str, out_dir: Path) -> None:
    """Write DIR/witness.key (0600, the private key with its name) and DIR/witness.vkey
    (the verifier key to give to ledger operators and verifiers). Refuses to overwrite."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from streams.evidence.cosignature import Witness, witness_private_key_text
    from streams.evidence.keys import _make_private_dir, _write_new

    made = Witness(name, Ed25519PrivateKey.generate())
    private_text = witness_private_key_text(made)
    key_path, vkey_path = out_dir / PRIVATE_KEY_FILE, out_dir / VERIFIER_KEY_FILE
    for path in (key_path, vkey_path):
        if path.exists():
            from streams.errors import ConfigError

            raise ConfigError(f"{path} exists; refusing to overwrite a key")
    _make_private_dir(out_dir)
    _write_new(key_path, private_text.encode(), 0o600)
    _write_new(vkey_path, (made.public().vkey() + "\n").encode(), 0o644)
    click.echo(f"private key:  {key_path} (keep it secret)")
    click.echo(f"verifier key: {vkey_path} ({made.public().vkey()})")


@witness.command("cosign")
@click.option("--state", "state_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="The witness's state file (created on first use): per log origin, the "
                   "last tree it cosigned.")
@click.option("--key", "key_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="The witness's private key (witness.key).")
@click.option("--log-key", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="The ledger's Ed25519 public key (PEM) the checkpoint must be signed by.")
@click.option("--checkpoint", "note_path", required=True,
              type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
              metavar="NOTE", help="The checkpoint (`consentwatch ledger checkpoint`); - reads "
                                   "stdin.")
@click.option("--proof", "proof_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="The consistency proof from the size this witness cosigned last "
                   "(`consentwatch ledger prove --from M --to N`).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the cosigned note here (default: stdout).")
def cosign(state_path: Path, key_path: Path, log_key: Path, note_path: Path,
           proof_path: Path | None, out: Path | None) -> int:
    """Check the checkpoint NOTE and cosign it: write NOTE with this witness's cosignature.

    Refuses (one line, exit 1) a checkpoint not signed by --log-key, one smaller than the
    last this witness cosigned for its log, another tree of that same size, and a larger
    one without a --proof that verifies. The state is updated (atomically) only then.
    """
    from streams.errors import ConfigError
    from streams.evidence.cosignature import parse_witness_private_key
    from streams.evidence.keys import load_public_key
    from streams.evidence.witness import cosign as cosign_note

    signer = parse_witness_private_key(_read(key_path, "the witness key", 4096),
                                       f"witness key {key_path}")
    log_public = load_public_key(log_key)
    note = _read(note_path, "the checkpoint", 1 << 20)
    result = cosign_note(note, log_public, signer, state_path, proof_path)
    if out is None:
        sys.stdout.write(result.note)
        sys.stdout.flush()
    else:
        try:
            out.write_text(result.note, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {out}: {exc.strerror}") from exc
    before = ("first checkpoint of this log" if result.previous_size is None
              else f"grew from size {result.previous_size}")
    click.echo(f"consentwatch: witness {signer.name} cosigned size {result.checkpoint.size} "
               f"({before})", err=True)
    return 0


def _read(path: Path, what: str, limit: int) -> str:
    """A small text file (or stdin for `-`): one line, exit 1, when unreadable."""
    from streams.evidence.checkpoint import CheckpointError
    from streams.evidence.small_file import TooLarge, read_small

    try:
        return read_small(path, limit, dash_is_stdin=True).decode("utf-8")
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror}") from None
    except TooLarge:
        raise CheckpointError(f"{what} {path} is too large") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{what} {path} is not UTF-8 text") from None
