"""The witness (issue 18): cosign a log's checkpoint only when the log only grew.

`consentwatch witness cosign` is run by a party other than the ledger's operator, with
its own key (streams.evidence.cosignature) and its own state file, which holds, per log
origin, the size and root of the last checkpoint it cosigned:

    {"format": "consentwatch-witness-state/1",
     "logs": {"<origin>": {"size": N, "root": "<base64>", "time": T}}}

Given the log's checkpoint (a signed note, verified against the log's public key) it
cosigns when:
- it never cosigned a checkpoint of that origin (trust on first use); or
- the checkpoint is the very tree it cosigned last (same size and root); or
- the checkpoint is larger and the RFC 9162 consistency proof given (`consentwatch
  ledger prove --from <its size> --to <new size>`) leads from its last tree to it.
It refuses a smaller tree than its last, a different tree of the same size (a split
view), and a missing or wrong proof, each with one line. The state is written (a
temporary file, fsync, rename) after signing and before the cosigned note is given
out; an exclusive lock on `<state>.lock` keeps two runs from racing.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streams.errors import ConfigError, ConsentwatchError
from streams.evidence.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from streams.evidence.cosignature import Witness, add_cosignature
from streams.evidence.merkle import verify_consistency
from streams.evidence.small_file import TooLarge, read_small

__all__ = ["STATE_FORMAT", "CosignResult", "WitnessRefused", "cosign"]

STATE_FORMAT = "consentwatch-witness-state/1"
_MAX_STATE_BYTES = 16 << 20


class WitnessRefused(ConsentwatchError):
    """The witness will not cosign this checkpoint (one line saying why)."""


@dataclass(frozen=True, slots=True)
class CosignResult:
    note: str
    checkpoint: Checkpoint
    previous_size: int | None  # the size it had cosigned before, None for a new origin


def cosign(note: str, log_key: Ed25519PublicKey, witness: Witness, state_path: Path,
           proof_path: Path | None, *, now: int | None = None) -> CosignResult:
    """Check `note` against the state and the proof, cosign it, record it; see the doc."""
    try:
        checkpoint = verify_checkpoint(note, log_key)
    except CheckpointError as exc:
        raise WitnessRefused(f"refused: the checkpoint: {exc} (by the --log-key given)") from None
    with _locked(state_path):
        state = _read_state(state_path)
        last = state["logs"].get(checkpoint.origin)
        previous_size = None
        if last is not None:
            previous_size = _check_growth(checkpoint, last, proof_path)
        timestamp = int(time.time()) if now is None else now
        cosigned = add_cosignature(note, witness, timestamp)
        state["logs"][checkpoint.origin] = {
            "size": checkpoint.size, "root": base64.b64encode(checkpoint.root).decode(),
            "time": timestamp}
        _write_state(state_path, state)
    return CosignResult(cosigned, checkpoint, previous_size)


def _check_growth(checkpoint: Checkpoint, last: dict[str, Any], proof_path: Path | None) -> int:
    size: int = last["size"]
    root: bytes = last["root"]
    if checkpoint.size < size:
        raise WitnessRefused(f"refused: the checkpoint (size {checkpoint.size}) is smaller than "
                             f"the tree of size {size} this witness cosigned for this log")
    if checkpoint.size == size:
        if checkpoint.root != root:
            raise WitnessRefused(f"refused: this witness cosigned a different tree of size "
                                 f"{size} for this log (a rewritten or forked log?)")
        return size
    if proof_path is None:
        raise WitnessRefused(f"refused: this witness last cosigned size {size}: give --proof "
                             f"from `consentwatch ledger prove --from {size} --to "
                             f"{checkpoint.size}`")
    from streams.evidence.consistency import read_proof

    proof, problem = read_proof(proof_path, size, checkpoint.size)
    if problem is not None:
        raise WitnessRefused(f"refused: {problem}")
    if not verify_consistency(size, checkpoint.size, root, checkpoint.root, proof):
        raise WitnessRefused(f"refused: the consistency proof from size {size} to "
                             f"{checkpoint.size} does not verify against the tree this "
                             "witness cosigned (a rewritten log?)")
    return size


@contextmanager
def _locked(state_path: Path) -> Iterator[None]:
    lock_path = state_path.with_name(state_path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_state(path: Path) -> dict[str, Any]:
    """The state file's content, checked; an absent file is an empty state."""
    bad = ConfigError(f"the witness state {path} is not a {STATE_FORMAT} file")
    try:
        state = orjson.loads(read_small(path, _MAX_STATE_BYTES))
    except FileNotFoundError:
        return {"format": STATE_FORMAT, "logs": {}}
    except OSError as exc:
        raise ConfigError(f"cannot read the witness state {path}: {exc.strerror}") from None
    except (TooLarge, orjson.JSONDecodeError):
        raise bad from None
    if (not isinstance(state, dict) or state.get("format") != STATE_FORMAT
            or not isinstance(state.get("logs"), dict)):
        raise bad
    for origin, last in state["logs"].items():
        try:
            root = base64.b64decode(last["root"], validate=True)
            size = last["size"]
        except (TypeError, KeyError, binascii.Error, ValueError):
            raise bad from None
        if type(size) is not int or size < 0 or len(root) != 32:
            raise bad
        state["logs"][origin] = {"size": size, "root": root, "time": last.get("time")}
    return state


def _write_state(path: Path, state: dict[str, Any]) -> None:
    logs = {origin: {"size": last["size"],
                     "root": last["root"] if isinstance(last["root"], str)
                     else base64.b64encode(last["root"]).decode(),
                     "time": last["time"]}
            for origin, last in state["logs"].items()}
    data = orjson.dumps({"format": STATE_FORMAT, "logs": logs},
                        option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise ConfigError(f"cannot write the witness state next to {path}: "
                          f"{exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ConfigError(f"cannot write the witness state {path}: {exc.strerror}") from None
