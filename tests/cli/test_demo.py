"""`consentwatch demo`: a real broker, a real worker, the simulator, and a clean exit.

Runs the command as a user would. Every process the demo starts (the broker's JVM,
the worker) has the demo's work directory on its command line, so a process left
behind is found by that path, whatever its parent became.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx
import orjson
import psutil
import pytest
from rich.console import Console

from streams.cli import demo_cmd
from streams.cli.demo_cmd import new_run_dir, point_latest, verify_command
from streams.cli.demo_view import Progress, console, progress_line, progress_table
from streams.engine.rules import RULE_STAGE
from tests.conftest import ROOT
from tests.kafka_helpers import wait_until


class _Lines:
    """The demo's output, read by a thread as it comes (a pipe must be drained)."""

    def __init__(self, demo: subprocess.Popen[bytes]) -> None:
        assert demo.stdout is not None
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(demo.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.lines.append(line.decode(errors="replace"))

    def text(self, timeout: float) -> str:
        self._thread.join(timeout)
        return "".join(self.lines)


def _run_demo(work: Path, out: Path, duration: str) -> str:
    """A whole demo run (Ctrl-C'd if it outlives the timeout); its output, after
    checking it ended well."""
    demo = _demo(work, out, "--duration", duration)
    try:
        stdout, _ = demo.communicate(timeout=240)
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            demo.wait(120)
    text = stdout.decode(errors="replace")
    assert demo.returncode == 0, text[-3000:]
    return text


def _interruptible() -> None:
    """In the demo's process: Ctrl-C as a terminal's, whatever pytest was started by (a
    shell's background job, e.g. `nohup ... &`, ignores SIGINT, and Python keeps an
    ignored SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _demo(work: Path, out: Path, *args: str, desk: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli.app", "demo", "--work-dir", str(work),
         "--out-dir", str(out), *args, *(() if desk else ("--no-desk",))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
        preexec_fn=_interruptible)  # noqa: PLW1509 - only a signal disposition


def _left_behind(work: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if str(work) in cmdline and proc.info["pid"] != psutil.Process().pid:
            found.append(f"{proc.info['pid']}: {cmdline[:200]}")
    return found


def _started_children(demo: subprocess.Popen[bytes], work: Path, timeout: float) -> None:
    """Wait until the demo's worker is running (the broker is up before it starts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("worker" in line for line in _left_behind(work)):
            return
        assert demo.poll() is None, "the demo ended before starting its worker"
        time.sleep(0.5)
    raise AssertionError("the demo did not start its worker in time")


@pytest.mark.kafka
def test_the_demo_scores_precision_and_recall_one_and_leaves_nothing_behind(
        tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    text = _run_demo(work, out, "15")
    assert "precision 1.000 recall 1.000" in text, text[-3000:]
    assert "Traceback" not in text
    expected = (out / "latest" / "truth.jsonl").read_bytes().splitlines()
    found = (out / "latest" / "findings.jsonl").read_bytes().splitlines()
    assert expected and len(found) == len(expected)
    assert _left_behind(work) == []


@pytest.mark.kafka
def test_ctrl_c_midway_stops_everything(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    demo = _demo(work, out, "--duration", "120")
    output = _Lines(demo)
    try:
        _started_children(demo, work, timeout=120)
        assert len(_left_behind(work)) >= 2  # the broker and the worker
        # Midway: the progress line (every 5 s without a terminal) shows events produced.
        wait_until(lambda: any(re.search(r"produced [1-9]", line) for line in output.lines)
                   or demo.poll() is not None, timeout=120, interval=0.2,
                   what="the demo producing events")
        assert demo.poll() is None, output.text(5)[-3000:]
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    text = output.text(timeout=30)
    assert demo.returncode == 130, text[-3000:]
    assert "consentwatch: stopped (interrupted)" in text
    assert "error" not in text.lower().split("stopping the worker")[-1]
    assert "Traceback" not in text
    assert _left_behind(work) == []


def _sign_in(url: str, name: str, password: str) -> tuple[httpx.Response, httpx.Response]:
    """Sign in to the desk at `url` as a browser would; the findings page and the export
    form, signed in."""
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30,
                      trust_env=False) as client:
        form = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert form.status_code == 200 and token, form.text[:2000]
        signed_in = client.post("/login", data={"username": name, "password": password,
                                                "csrf_token": token.group(1)})
        assert signed_in.status_code == 303, signed_in.text[:2000]
        assert signed_in.headers["location"] == "/findings"
        return client.get("/findings"), client.get("/export")


@pytest.mark.kafka
def test_the_demo_ends_with_the_desk_on_its_ledger_until_ctrl_c(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    demo = _demo(work, out, "--duration", "3", "--partitions", "1", desk=True)
    output = _Lines(demo)
    try:
        wait_until(lambda: any("Ctrl-C stops the desk" in line for line in output.lines)
                   or demo.poll() is not None, timeout=240, interval=0.2,
                   what="the demo's desk")
        assert demo.poll() is None, output.text(5)[-3000:]
        text = "".join(output.lines)
        assert "precision 1.000 recall 1.000" in text, text[-3000:]
        url = _after(text, "the review desk: ").split()[0]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        login = re.search(r"sign in as (\S+) with the password (\S+) ", text)
        assert login, text[-3000:]
        name, password = login.groups()
        assert name == "demo" and len(password) >= 20
        assert password not in (work / "desk.log").read_text(errors="replace")
        page, export = _sign_in(url, name, password)
        assert page.status_code == 200
        # The desk signs exports with the run's key, as the demo's own export was signed.
        assert export.status_code == 200 and 'id="no-key"' not in export.text, export.text
        found = {orjson.loads(line)["finding_id"]
                 for line in (out / "latest" / "findings.jsonl").read_bytes().splitlines()}
        shown = set(re.findall(r'href="/findings/([0-9a-f]{16,})"', page.text))
        assert shown <= found and len(shown) == min(50, len(found)) > 0, page.text[:3000]
        # Only the desk is left running: the worker and the broker were stopped before it.
        assert [line for line in _left_behind(work) if "java" in line or " worker " in line] \
            == []
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    text = output.text(timeout=30)
    assert demo.returncode == 0, text[-3000:]
    assert "stopping the desk" in text and "Traceback" not in text
    assert "interrupted" not in text
    assert _left_behind(work) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}healthz", timeout=5, trust_env=False)


def _java_started(work: Path) -> bool:
    return any("java" in line for line in _left_behind(work))


@pytest.mark.kafka
def test_ctrl_c_while_the_broker_starts_stops_everything_in_seconds(tmp_path: Path) -> None:
    # A Ctrl-C while the broker started waited for the start script to finish, then for a
    # graceful broker stop: more than 120 s on a busy machine.
    work, out = tmp_path / "work", tmp_path / "out"
    demo = _demo(work, out, "--duration", "120")
    try:
        deadline = time.monotonic() + 120
        while not _java_started(work):
            assert demo.poll() is None, "the demo ended before starting its broker"
            assert time.monotonic() < deadline, "the broker's JVM never started"
            time.sleep(0.1)
        demo.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        stdout, _ = demo.communicate(timeout=120)
        took = time.monotonic() - interrupted
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    text = stdout.decode(errors="replace")
    assert demo.returncode == 130, text[-3000:]
    assert "Traceback" not in text
    assert _left_behind(work) == []
    # Two 5 s graces (start script, broker) and the JVM's own exit: a bound with room
    # for a busy machine, far below the minutes it took.
    assert took < 45, f"the demo took {took:.0f} s to stop"


def _files(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _after(text: str, marker: str) -> str:
    """The rest of the one line that holds `marker`."""
    lines = [line for line in text.splitlines() if marker in line]
    assert len(lines) == 1, f"{marker!r} in {len(lines)} lines:\n{text[-3000:]}"
    return lines[0].split(marker, 1)[1]


def _assert_readable(text: str) -> None:
    """Each message on one line, rule names whole, every message prefixed once."""
    for line in text.splitlines():
        assert line.count("(") == line.count(")"), f"a line broken mid-phrase: {line!r}"
    assert "…" not in text
    assert "consentwatch: consentwatch:" not in text
    assert "ledger: consentwatch:" not in text
    assert "recall 1.000 (" in _after(text, "precision 1.000")
    assert "worker.log)" in _after(text, "(log ")
    for rule in RULE_STAGE:
        assert rule in text


@pytest.mark.kafka
def test_two_demos_in_a_row_both_succeed_keep_their_outputs_and_verify(
        tmp_path: Path) -> None:
    # The second demo failed ("evidence-bundle exists") after overwriting the first's
    # findings and truth; the public key was deleted, so no bundle could be verified.
    out = tmp_path / "out"
    runs: list[tuple[Path, str]] = []
    for number in (1, 2):
        work = tmp_path / f"work{number}"
        text = _run_demo(work, out, "3")
        _assert_readable(text)
        run_dir = Path(_after(text, "this run's outputs: ").split("/ (")[0])
        if number == 1:
            first_files = _files(run_dir)
            assert {"findings.jsonl", "truth.jsonl", "consentwatch.pub",
                    "evidence-bundle.zip"} <= set(first_files)
        runs.append((run_dir, _after(text, "verify it again with: ")))
    (first, _), (second, _) = runs
    assert first != second
    assert _files(first) == first_files
    assert (out / "latest").resolve() == second.resolve()
    for _, command in runs:
        verified = subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True,
                                  check=False)
        assert verified.returncode == 0, (command, verified.stdout, verified.stderr)
        assert verified.stdout.startswith(b"OK: ")


def test_each_run_gets_a_new_folder_and_latest_points_to_the_last(tmp_path: Path) -> None:
    out = tmp_path / "var" / "demo"
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    first = new_run_dir(out, now)
    (first / "findings.jsonl").write_text("first")
    point_latest(out, first)
    second = new_run_dir(out, now)  # the same second: never the same folder
    point_latest(out, second)
    assert first.name == "20260501T120000Z" and second != first
    assert (first / "findings.jsonl").read_text() == "first"
    assert list(second.iterdir()) == []
    assert (out / "latest").resolve() == second.resolve()
    assert sorted(p.name for p in out.iterdir()) == [first.name, second.name, "latest"]


def test_the_verify_command_names_the_files_from_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "var" / "demo" / "a run"
    command = shlex.split(verify_command(run_dir / "evidence-bundle.zip",
                                         run_dir / "consentwatch.pub"))
    assert command[1:] == ["verify", "var/demo/a run/evidence-bundle.zip", "--public-key",
                           "var/demo/a run/consentwatch.pub"]
    assert os.access(command[0], os.X_OK) or command[0] == "consentwatch"


def _progress(produced: int, lag: int) -> Progress:
    progress = Progress(target=10_000, started=time.monotonic() - 10, produced=produced,
                        lag=lag, phase="producing")
    for number, rule in enumerate(RULE_STAGE):
        progress.found[rule] = number
    return progress


def test_the_progress_table_shows_every_rule_name_whole_at_120_columns() -> None:
    screen = Console(width=120, record=True)
    screen.print(progress_table(_progress(1_234, 56)))
    text = screen.export_text()
    assert "…" not in text
    for rule in RULE_STAGE:
        assert rule in text
    assert max(len(line) for line in text.splitlines()) <= 120


def test_worker_lag_is_never_more_than_what_was_produced() -> None:
    # The lag counted the correlate topic (records and watermark markers) and the control
    # records: it could read more than what was produced.
    progress = _progress(produced=300, lag=731)
    assert "worker lag 300" in progress_line(progress)
    screen = Console(width=120, record=True)
    screen.print(progress_table(progress))
    assert "731" not in screen.export_text()
    assert "worker lag 0" in progress_line(_progress(produced=300, lag=-2))


def test_output_to_a_pipe_is_never_wrapped(capsys: pytest.CaptureFixture[str]) -> None:
    message = "evidence: export: " + " ".join(["exported 156 findings (checkpoint)"] * 8)
    console().print(message)
    assert capsys.readouterr().out == message + "\n"


def _dev_setup(root: Path) -> tuple[str, list[str]]:
    """`./dev setup` in a copy of the checkout's entry point whose venv python only
    records how it was called: the setup's messages and pip's options, in a second."""
    calls = root / "calls"
    proc = subprocess.run([str(root / "dev"), "setup"], capture_output=True, text=True,
                          env={**os.environ, "CONSENTWATCH_NATIVE": "off", "CALLS": str(calls)},
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr, calls.read_text().splitlines() if calls.exists() else []


def test_dev_says_what_the_first_install_does_and_lets_pip_show_it(tmp_path: Path) -> None:
    # The first `./dev run` spent two silent minutes in `pip install --quiet`.
    (tmp_path / "dev").write_bytes((ROOT / "dev").read_bytes())
    (tmp_path / "dev").chmod(0o755)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "$*" >>"$CALLS"\n')
    python.chmod(0o755)

    messages, calls = _dev_setup(tmp_path)
    pip = [call for call in calls if call.startswith("-m pip install")]
    assert len(pip) == 2 and not any("--quiet" in call for call in pip)
    assert "installing Python packages" in messages and "(first run: about 2 minutes)" in messages
    assert messages.index("upgrading pip") < messages.index("installing consentwatch")

    (tmp_path / "calls").unlink()
    messages, calls = _dev_setup(tmp_path)  # installed: nothing to do
    assert not [call for call in calls if "pip" in call] and "install" not in messages

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    messages, calls = _dev_setup(tmp_path)  # a reinstall: said, and quiet
    assert "pyproject.toml changed" in messages
    assert [call for call in calls if "pip" in call][-1].count("--quiet") == 1


def test_an_out_dir_that_cannot_be_created_is_one_line_before_any_broker(
        tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    work = tmp_path / "work"
    demo = _demo(work, tmp_path / "a-file" / "demo")
    stdout, _ = demo.communicate(timeout=60)
    text = stdout.decode(errors="replace")
    assert demo.returncode == 2, text
    assert text.splitlines() == [
        f"consentwatch: error: cannot create --out-dir {tmp_path}/a-file/demo: Not a directory"]
    assert not (work / "kafka").exists()


def test_a_desk_bind_off_loopback_is_one_line_before_any_broker(tmp_path: Path) -> None:
    work = tmp_path / "work"
    demo = _demo(work, tmp_path / "out", "--desk-bind", "0.0.0.0:8080", desk=True)
    stdout, _ = demo.communicate(timeout=60)
    text = stdout.decode(errors="replace")
    assert demo.returncode == 2, text
    assert len(text.splitlines()) == 1 and "0.0.0.0 is not a loopback address" in text
    assert not (work / "kafka").exists()


def test_a_desk_that_cannot_listen_is_one_line_and_fails_the_demo(tmp_path: Path) -> None:
    from streams.evidence.ledger import open_ledger

    ledger = tmp_path / "ledger.sqlite"
    with open_ledger(str(ledger)):
        pass
    screen = Console(record=True, width=300)
    stack = demo_cmd._Processes(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            assert demo_cmd._show_desk(stack, ledger, ("127.0.0.1", port), screen) == 1
        finally:
            stack.stop()
    text = screen.export_text()
    assert f"the review desk did not start: the desk cannot listen on 127.0.0.1:{port}" in text
    assert "password" not in text and "Traceback" not in text
    assert stack.desk is not None and stack.desk.returncode is not None
