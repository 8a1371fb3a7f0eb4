"""`consentwatch desk user add|list` and `desk serve`'s refusals: one line, no traceback."""

from __future__ import annotations

from pathlib import Path

from streams.evidence.ledger import open_ledger
from tests.conftest import run_cli


def _ledger(tmp_path: Path) -> str:
    path = tmp_path / "ledger.db"
    open_ledger(str(path)).close()
    return str(path)


def test_a_user_is_added_with_a_password_from_stdin_and_listed(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    done = run_cli("desk", "user", "add", "mira", "--role", "exporter", "--password-stdin",
                   "--ledger", ledger, stdin=b"a long enough password\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == "added user mira (exporter)\n"
    listed = run_cli("desk", "user", "list", "--ledger", ledger).stdout.decode()
    assert listed.startswith("mira\texporter\t")
    again = run_cli("desk", "user", "add", "mira", "--role", "viewer", "--password-stdin",
                    "--ledger", ledger, stdin=b"another long password\n")
    assert again.returncode == 1
    assert again.stderr.decode() == "consentwatch: error: the user mira exists already\n"


def test_a_short_password_a_bad_name_or_role_is_one_line(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    for args, stdin, message in (
            (("mira", "--role", "viewer"), b"short\n", "a password has 12 to 1024 characters"),
            (("mi ra", "--role", "viewer"), b"a long enough password\n", "a user name is"),
            (("mira", "--role", "root"), b"a long enough password\n", "'root' is not one of")):
        done = run_cli("desk", "user", "add", *args, "--password-stdin", "--ledger", ledger,
                       stdin=stdin)
        err = done.stderr.decode()
        assert done.returncode in (1, 2) and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert b"long enough" not in done.stderr


def test_serve_refuses_a_missing_ledger_and_plain_http_off_the_machine(tmp_path: Path) -> None:
    missing = run_cli("desk", "serve", "--ledger", str(tmp_path / "typo.db"))
    assert missing.returncode == 2
    assert missing.stderr.decode() == f"consentwatch: error: no ledger at {tmp_path / 'typo.db'}\n"
    assert not (tmp_path / "typo.db").exists()
    ledger = _ledger(tmp_path)
    public = run_cli("desk", "serve", "--ledger", ledger, "--bind", "0.0.0.0:8080")
    assert public.returncode == 2
    assert "0.0.0.0 is not a loopback address: serve https" in public.stderr.decode()
    bad = run_cli("desk", "serve", "--ledger", ledger, "--bind", "localhost")
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr.decode()


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_cli("desk", "serve", "--ledger", _ledger(tmp_path), "--bind",
                       f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert done.stderr.decode() == (f"consentwatch: error: the desk cannot listen on "
                                    f"127.0.0.1:{port}: Address already in use\n")
