"""Trusted time (issue 18, item 3): checkpoints time-stamped by a real RFC 3161 TSA
(`openssl ts -reply` behind deploy/tsa/tsa.sh), the token carried in the bundle as
checkpoint.tsr, checked by `verify --tsa-cert`, by the standalone verifier, and by
`openssl ts -verify` as docs/verifying.md says. Without openssl these tests fail: they
never skip."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.evidence.checkpoint import verify_checkpoint
from streams.evidence.cosignature import note_parts
from streams.evidence.keys import generate_keypair, load_public_key
from streams.evidence.ledger import open_ledger
from streams.evidence.timestamp import TOKEN_FILE, check_timestamp, load_tsa_certs, note_digest
from tests.conftest import run_cli
from tests.evidence.test_ledger import finding as ledger_finding

REPO = Path(__file__).resolve().parents[2]
TSA_SH = REPO / "deploy" / "tsa" / "tsa.sh"
FROM, TO = "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"


def cli(*args: Any) -> tuple[int, str, str]:
    done = run_cli(*(str(arg) for arg in args))
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return done.returncode, done.stdout.decode(), stderr


def _openssl() -> str:
    found = shutil.which("openssl")
    assert found, "openssl is missing (Debian's openssl package: deploy/packages.sh)"
    return found


class Tsa:
    def __init__(self, folder: Path, *extra: str) -> None:
        _openssl()
        self.dir = folder
        done = subprocess.run([str(TSA_SH), "start", "--dir", str(folder), *extra],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        self.url = done.stdout.strip()
        self.ca = folder / "ca.pem"

    def stop(self) -> None:
        subprocess.run([str(TSA_SH), "stop", "--dir", str(self.dir)], capture_output=True,
                       timeout=60, check=True)


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tsa]:
    server = Tsa(tmp_path_factory.mktemp("tsa"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def expired_tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tsa]:
    """Signs with a certificate its CA issued for 2020 only."""
    server = Tsa(tmp_path_factory.mktemp("tsa_expired"), "--expired")
    try:
        yield server
    finally:
        server.stop()


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "ledger.db"
        self.key, self.pub = generate_keypair(root / "keys")
        with open_ledger(str(self.db)) as ledger:
            ledger.append("finding", [ledger_finding(n) for n in range(5)])

    def export(self, name: str, *extra: Any) -> Path:
        out = self.root / name
        code, _, err = cli("export", "--ledger", self.db, "--from", FROM, "--to", TO,
                           "--purpose", "inquiry", "--private-key", self.key, *extra, out)
        assert code == 0, err
        return out

    def verify(self, path: Path, *extra: Any) -> tuple[int, list[str], str]:
        code, out, err = cli("verify", path, "--public-key", self.pub, *extra)
        return code, out.splitlines(), err

    def note(self, bundle: Path) -> str:
        import json

        manifest = json.loads((bundle / "manifest.json").read_bytes())
        note: str = manifest["checkpoint"]
        return note


def _openssl_verify(token: Path, digest: bytes, ca: Path) -> subprocess.CompletedProcess[str]:
    """The exact command of docs/verifying.md."""
    return subprocess.run([_openssl(), "ts", "-verify", "-in", str(token), "-digest",
                           digest.hex(), "-CAfile", str(ca)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_time_stamped_export_verifies_in_ours_and_in_openssl(tmp_path: Path,
                                                                tsa: Tsa) -> None:
    setup = Setup(tmp_path)
    bundle = setup.export("b1", "--tsa-url", tsa.url)
    assert (bundle / TOKEN_FILE).is_file()
    code, lines, err = setup.verify(bundle, "--tsa-cert", tsa.ca)
    assert code == 0, (lines, err)
    assert lines[-1].startswith("OK time-stamp: the checkpoint existed at 20"), lines
    assert "CN=consentwatch test TSA" in lines[-1]
    code, lines, _ = setup.verify(bundle.with_name("b1.zip"), "--tsa-cert", tsa.ca)
    assert code == 0 and lines[-1].startswith("OK time-stamp"), lines
    # the attestation and manifest cover the token: verify without --tsa-cert still OK
    code, lines, _ = setup.verify(bundle)
    assert code == 0 and not any("time-stamp" in line for line in lines), lines

    note = setup.note(bundle)
    body, _ = note_parts(note)
    digest = hashlib.sha256(body.encode()).digest()
    assert digest == note_digest(note)
    # docs/verifying.md: `head -n 3 CHECKPOINT.note | sha256sum`
    assert digest == hashlib.sha256("".join(note.splitlines(keepends=True)[:3]).encode()
                                    ).digest()
    done = _openssl_verify(bundle / TOKEN_FILE, digest, tsa.ca)
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stderr

    # docs/verifying.md gives that command
    doc = (REPO / "docs" / "verifying.md").read_text()
    assert "openssl ts -verify -in checkpoint.tsr -digest" in doc


def test_ledger_checkpoint_tsa_url_stores_the_token_an_export_carries(tmp_path: Path,
                                                                       tsa: Tsa) -> None:
    setup = Setup(tmp_path)
    note_path = tmp_path / "cp.note"
    code, _, err = cli("ledger", "checkpoint", "--ledger", setup.db, "--private-key",
                       setup.key, "--out", note_path, "--tsa-url", tsa.url)
    assert code == 0, err
    checkpoint = verify_checkpoint(note_path.read_text(), load_public_key(setup.pub))
    with open_ledger(str(setup.db)) as ledger:
        token = ledger.timestamp_token(checkpoint.size, checkpoint.root)
    assert token is not None
    problems, ok = check_timestamp(token, note_path.read_text(), load_tsa_certs(tsa.ca),
                                   "ca.pem")
    assert not problems and ok.startswith("OK time-stamp"), problems
    # the ledger keeps its tokens append-only
    with sqlite3.connect(setup.db) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM timestamps")
    with sqlite3.connect(setup.db) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE timestamps SET token = x'00'")


def test_a_bundle_without_a_token_fails_when_tsa_cert_is_given(tmp_path: Path,
                                                                tsa: Tsa) -> None:
    setup = Setup(tmp_path)
    bundle = setup.export("plain")
    assert not (bundle / TOKEN_FILE).exists()
    code, lines, err = setup.verify(bundle, "--tsa-cert", tsa.ca)
    assert code == 1, lines
    assert [line for line in lines if line.startswith("FAIL")] == [
        f"FAIL {TOKEN_FILE}: missing: the bundle carries no time-stamp token (--tsa-cert was "
        "given)"], lines
    assert "Traceback" not in err


def _store_token(db: Path, token: bytes) -> None:
    """What someone with write access to the ledger could do: store a token for the
    checkpoint the next export will sign (the latest of its size and root)."""
    with open_ledger(str(db)) as ledger:
        size, root, _hashes = ledger.audit()
    # the next export signs the tree as it is now (its own leaf comes after)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO timestamps (size, root, token, stored_at) VALUES "
                     "(?, ?, ?, 0)", (size, root, token))


def _token_for(tsa: Tsa, digest: bytes, folder: Path) -> bytes:
    query, reply = folder / "q.tsq", folder / "r.tsr"
    subprocess.run([_openssl(), "ts", "-query", "-digest", digest.hex(), "-sha256", "-cert",
                    "-out", str(query)], capture_output=True, timeout=60, check=True)
    subprocess.run(["curl", "-sf", "-H", "Content-Type: application/timestamp-query",
                    "--data-binary", f"@{query}", "-o", str(reply), tsa.url]
                   if shutil.which("curl") else
                   [sys.executable, "-c", _POST, tsa.url, str(query), str(reply)],
                   capture_output=True, timeout=60, check=True)
    return reply.read_bytes()


_POST = """import sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=open(sys.argv[2], 'rb').read(),
                             headers={'Content-Type': 'application/timestamp-query'})
open(sys.argv[3], 'wb').write(urllib.request.urlopen(req, timeout=30).read())
"""


def test_a_token_for_another_digest_fails_in_ours_and_in_openssl(tmp_path: Path,
                                                                   tsa: Tsa) -> None:
    setup = Setup(tmp_path)
    other = hashlib.sha256(b"another checkpoint\n").digest()
    _store_token(setup.db, _token_for(tsa, other, tmp_path))
    bundle = setup.export("forged")
    code, lines, _ = setup.verify(bundle, "--tsa-cert", tsa.ca)
    assert code == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        f"FAIL {TOKEN_FILE}: the token time-stamps another digest, not this bundle's "
        "checkpoint"], lines
    done = _openssl_verify(bundle / TOKEN_FILE, note_digest(setup.note(bundle)), tsa.ca)
    assert done.returncode != 0 and "Verification: OK" not in done.stdout


def test_a_truncated_token_fails(tmp_path: Path, tsa: Tsa) -> None:
    setup = Setup(tmp_path)
    good = _token_for(tsa, hashlib.sha256(b"x").digest(), tmp_path)
    _store_token(setup.db, good[: len(good) // 2])
    bundle = setup.export("truncated")
    code, lines, err = setup.verify(bundle, "--tsa-cert", tsa.ca)
    assert code == 1 and "Traceback" not in err
    fails = [line for line in lines if line.startswith("FAIL")]
    assert len(fails) == 1 and fails[0].startswith(
        f"FAIL {TOKEN_FILE}: not a time-stamp reply (truncated or corrupt?)"), lines


def test_a_token_of_an_expired_tsa_certificate_fails(tmp_path: Path,
                                                     expired_tsa: Tsa) -> None:
    setup = Setup(tmp_path)
    bundle = setup.export("expired", "--tsa-url", expired_tsa.url)
    code, lines, err = setup.verify(bundle, "--tsa-cert", expired_tsa.ca)
    assert code == 1 and "Traceback" not in err
    fails = [line for line in lines if line.startswith("FAIL")]
    assert len(fails) == 1 and fails[0].startswith(
        f"FAIL {TOKEN_FILE}: the TSA certificate was not valid at the token's time "), lines
    assert "valid from 2020-01-01T00:00:00Z to 2020-12-31T23:59:59Z" in fails[0]
    done = _openssl_verify(bundle / TOKEN_FILE, note_digest(setup.note(bundle)),
                           expired_tsa.ca)
    assert done.returncode != 0


def test_a_token_checked_against_another_ca_fails(tmp_path: Path, tsa: Tsa,
                                                  expired_tsa: Tsa) -> None:
    setup = Setup(tmp_path)
    bundle = setup.export("b", "--tsa-url", tsa.url)
    code, lines, _ = setup.verify(bundle, "--tsa-cert", expired_tsa.ca)
    assert code == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        f"FAIL {TOKEN_FILE}: the token does not verify: the TSA's certificate does not "
        "chain to the certificate given"], lines


def test_an_unreachable_tsa_is_one_line(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    code, _, err = cli("export", "--ledger", setup.db, "--from", FROM, "--to", TO,
                       "--purpose", "inquiry", "--private-key", setup.key, "--tsa-url",
                       "http://127.0.0.1:9/", tmp_path / "never")
    assert code == 1 and err.count("\n") == 1 and "could not be asked" in err, err
    assert not (tmp_path / "never").exists()


def test_the_standalone_verifier_checks_the_token(tmp_path: Path, tsa: Tsa) -> None:
    setup = Setup(tmp_path)
    bundle = setup.export("b", "--tsa-url", tsa.url)

    import os

    from tests.evidence.test_export_verify import (
        _BLOCKED_RUN,
        PIPELINE_MODULES,
        _verify_only_install,
    )

    # what `pip install ./verify` ships, with the pipeline's modules blocked
    site = _verify_only_install(tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONSENTWATCH_NATIVE")}

    def run(*args: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _BLOCKED_RUN, ",".join(PIPELINE_MODULES), str(site),
             str(bundle), "--public-key", str(setup.pub), *map(str, args)],
            cwd=tmp_path, env=env | {"PYTHONPATH": str(site)}, capture_output=True, text=True,
            timeout=120, check=False)

    ok = run("--tsa-cert", tsa.ca)
    assert ok.returncode == 0 and ok.stdout.splitlines()[-1].startswith("OK time-stamp"), \
        ok.stderr
    plain = setup.export("plain")
    bundle = plain
    bad = run("--tsa-cert", tsa.ca)
    assert bad.returncode == 1 and f"FAIL {TOKEN_FILE}: missing" in bad.stdout, bad.stdout


def test_the_demo_prints_a_verify_command_that_checks_the_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    from streams.cli.demo_cmd import verify_command

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    command = shlex.split(verify_command(run_dir / "evidence-bundle.zip",
                                         run_dir / "consentwatch.pub", run_dir / "tsa-ca.pem"))
    assert command[1:] == ["verify", "run/evidence-bundle.zip", "--public-key",
                           "run/consentwatch.pub", "--tsa-cert", "run/tsa-ca.pem"]


def test_a_tsa_cert_that_is_no_certificate_is_a_usage_error(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    bundle = setup.export("plain")
    code, _, err = setup.verify(bundle, "--tsa-cert", bundle / "manifest.json")
    assert code == 2 and err.count("\n") == 1 and "holds no PEM certificate" in err, err


def test_a_damaged_token_is_one_line_never_a_traceback(tmp_path: Path, tsa: Tsa) -> None:
    """Bytes flipped all over a real token: whatever the ASN.1 and X.509 parsers raise, one
    FAIL line of the token (and the manifest's line for the changed file), exit 1."""
    setup = Setup(tmp_path)
    bundle = setup.export("damaged", "--tsa-url", tsa.url)
    good = (bundle / TOKEN_FILE).read_bytes()
    for offset in range(0, len(good), max(1, len(good) // 40)):
        damaged = bytearray(good)
        damaged[offset] ^= 0xFF
        (bundle / TOKEN_FILE).write_bytes(bytes(damaged))
        code, lines, err = setup.verify(bundle, "--tsa-cert", tsa.ca)
        assert code == 1 and "Traceback" not in err, (offset, err)
        assert f"FAIL {TOKEN_FILE}: SHA-256 does not match the manifest (file changed)" in lines
        assert all(line.startswith(("FAIL", "OK")) for line in lines), (offset, lines)
