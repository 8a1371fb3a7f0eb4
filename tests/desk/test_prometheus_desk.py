"""A real Prometheus scrapes a real desk: the project's own prometheus.yml and alerts.yml
(only the targets, intervals and paths changed), `consentwatch desk serve` on the test
ledger, whose CRITICAL findings were detected long ago and have no review. Prometheus
must hold the desk's gauges with bounded labels only, and the 24-hour alert must be
pending (its `for: 5m` keeps it from firing within a test)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import kafka_helpers as kh
from tests.desk.conftest import serve_desk
from tests.metrics.test_prometheus_scrape import PROMETHEUS, Prometheus
from tests.promql_names import DESK_METRICS

DESK_JOB = "consentwatch-desk"
LABELS = {"__name__", "job", "instance", "rule", "severity", "status"}


@pytest.fixture
def desk(desk_ledger: Path, tmp_path: Path) -> Iterator[str]:
    """HOST:PORT of a desk on a copy of the test ledger."""
    ledger = tmp_path / "ledger.db"
    shutil.copy(desk_ledger, ledger)
    for url in serve_desk(ledger):
        yield url.removeprefix("http://")


def test_prometheus_scrapes_the_desk_and_the_critical_alert_goes_pending(
        desk: str, tmp_path: Path) -> None:
    if not PROMETHEUS.exists():
        pytest.fail(f"{PROMETHEUS} is missing: install Debian's packages with "
                    "deploy/packages.sh", pytrace=False)
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    server = Prometheus(workdir)
    try:
        # The workers' job points at a closed port: only the desk answers.
        server.start([f"127.0.0.1:{kh.free_port()}"], {DESK_JOB: [desk]})

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
