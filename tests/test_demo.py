"""`consentwatch demo`: a real broker, a real worker, the simulator, and a clean exit.

Runs the command as a user would. Every process the demo starts (the broker's JVM,
the worker) has the demo's work directory on its command line, so a process left
behind is found by that path, whatever its parent became.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.kafka


def _demo(work: Path, out: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli.app", "demo", "--work-dir", str(work),
         "--out-dir", str(out), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)


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


def test_the_demo_scores_precision_and_recall_one_and_leaves_nothing_behind(
        tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    demo = _demo(work, out, "--duration", "15")
    try:
        stdout, _ = demo.communicate(timeout=240)
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGINT)
            demo.wait(120)
    text = stdout.decode(errors="replace")
    assert demo.returncode == 0, text[-3000:]
    assert "precision 1.000 recall 1.000" in text, text[-3000:]
    assert "Traceback" not in text
    expected = (out / "truth.jsonl").read_bytes().splitlines()
    found = (out / "findings.jsonl").read_bytes().splitlines()
    assert expected and len(found) == len(expected)
    assert _left_behind(work) == []


def test_ctrl_c_midway_stops_everything(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    demo = _demo(work, out, "--duration", "120")
    try:
        _started_children(demo, work, timeout=120)
        assert len(_left_behind(work)) >= 2  # the broker and the worker
        time.sleep(3)  # producing by now
        demo.send_signal(signal.SIGINT)
        stdout, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    text = stdout.decode(errors="replace")
    assert demo.returncode == 130, text[-3000:]
    assert "consentwatch: stopped (interrupted)" in text
    assert "error" not in text.lower().split("stopping the worker")[-1]
    assert "Traceback" not in text
    assert _left_behind(work) == []


def _java_started(work: Path) -> bool:
    return any("java" in line for line in _left_behind(work))


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
