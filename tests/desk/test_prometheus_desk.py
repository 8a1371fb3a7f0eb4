"""A real Prometheus scrapes a real desk: the project's own prometheus.yml and alerts.yml
(only the targets, intervals and paths changed), `consentwatch desk serve` on the test
ledger, whose CRITICAL findings were detected long ago and have no review. Prometheus
must hold the desk's gauges with bounded labels only, and the 24-hour alert must be
pending (its `for: 5m` keeps it from firing within a test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import kafka_helpers as kh
from tests.desk.test_browser import ROOT, _free_port, _wait_healthy
from tests.metrics.test_prometheus_scrape import PROMETHEUS, PROMETHEUS_DIR, Prometheus
from tests.promql_names import DESK_METRICS

DESK_JOB = "consentwatch-desk"
LABELS = {"__name__", "job", "instance", "rule", "severity", "status"}


@pytest.fixture
def desk(desk_ledger: Path, tmp_path: Path) -> Iterator[str]:
    ledger = tmp_path / "ledger.db"
    shutil.copy(desk_ledger, ledger)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli.app", "desk", "serve", "--ledger", str(ledger),
         "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start(server: Prometheus, desk: str) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    for manager in config["alerting"]["alertmanagers"]:
        for static in manager["static_configs"]:
            static["targets"] = [f"127.0.0.1:{kh.free_port()}"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs[DESK_JOB]["static_configs"] = [{"targets": [desk]}]
    jobs["consentwatch"]["static_configs"] = [{"targets": [f"127.0.0.1:{kh.free_port()}"]}]
    path = server.workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with open(server.workdir / "prometheus.log", "ab") as log:
        server.process = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={path}",
             f"--storage.tsdb.path={server.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{server.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    kh.wait_until(server.ready, timeout=30, interval=0.2, what="Prometheus to be ready",
                  on_timeout=server.tail)


def test_prometheus_scrapes_the_desk_and_the_critical_alert_goes_pending(
        desk: str, tmp_path: Path) -> None:
    if not PROMETHEUS.exists():
        pytest.fail(f"{PROMETHEUS} is missing: install Debian's packages with "
                    "deploy/packages.sh", pytrace=False)
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    server = Prometheus(workdir)
    try:
        _start(server, desk)

        def scraped() -> bool:
            return bool(server.query(f'up{{job="{DESK_JOB}"}} == 1'))

        kh.wait_until(scraped, timeout=60, interval=0.5, what="the desk to be scraped",
                      on_timeout=server.tail)
        for name in DESK_METRICS:
            series = server.query(f'{name}{{job="{DESK_JOB}"}}')
            assert series, name
            for one in series:
                assert set(one["metric"]) <= LABELS, one["metric"]
        oldest = server.query('consentwatch_desk_oldest_open_finding_age_seconds'
                              '{severity="CRITICAL"}')
        assert oldest and float(oldest[0]["value"][1]) > 86_400

        def pending() -> bool:
            alerts = server.api("alerts")["alerts"]
            return any(alert["labels"]["alertname"] == "ConsentwatchCriticalFindingOpen24h"
                       and alert["state"] in ("pending", "firing") for alert in alerts)

        kh.wait_until(pending, timeout=60, interval=0.5,
                      what="ConsentwatchCriticalFindingOpen24h to be pending",
                      on_timeout=server.tail)
        assert not any(alert["labels"]["alertname"] == "ConsentwatchDeskDown"
                       for alert in server.api("alerts")["alerts"])
    finally:
        server.stop()
