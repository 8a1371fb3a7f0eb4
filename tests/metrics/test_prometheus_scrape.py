"""A real Prometheus scrapes a real worker fed the spec's examples (issue 4, part 3).

Prometheus (Debian's /usr/bin/prometheus) runs on the project's own
deploy/prometheus/prometheus.yml and alerts.yml: only the targets (the worker's web port
on 127.0.0.1), the intervals (1 s) and the file paths are changed. One worker on one topic
prefix is fed every example case at once: each case's ids (event, subject, account,
meeting, ...) are prefixed with the case's name so the cases cannot see each other, and
each case is moved so that all end at the same recent time (see kh.recent). The test
then asks Prometheus' HTTP API that the findings counters hold, per rule, the counts of
the cases' expected.jsonl, and that the critical alert on pseudonym-deanonymized findings
fires.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streams.model.events import Event
from tests import kafka_helpers as kh
from tests.conftest import EXAMPLES_DIR, ROOT, example_cases
from tests.pipeline.test_pipeline_kafka import events_of

pytestmark = pytest.mark.kafka

PROMETHEUS = Path("/usr/bin/prometheus")
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
JOB = "consentwatch"
CRITICAL_ALERT = "ConsentwatchPseudonymDeanonymized"
# Every string field of an event that names something: prefixed per case.
ID_FIELDS = ("event_id", "account_id", "meeting_id", "subject_id", "request_event_id",
             "consent_record_id", "viewer_id", "requested_by", "actor_id")


# -- the example cases as one stream ------------------------------------------------------


def expected_counts() -> collections.Counter[str]:
    """Findings per rule over every case's expected.jsonl."""
    counts: collections.Counter[str] = collections.Counter()
    for case in example_cases():
        for line in (case / "expected.jsonl").read_text().splitlines():
            if line.strip():
                counts[orjson.loads(line)["rule"]] += 1
    return counts


def namespaced(events: list[Event], prefix: str) -> list[Event]:
    """The same events with every id prefixed: equal ids stay equal, no other case shares one."""
    moved: list[Event] = []
    for event in events:
        changes = {name: f"{prefix}{getattr(event, name)}" for name in ID_FIELDS
                   if isinstance(getattr(event, name, None), str)}
        moved.append(dataclasses.replace(event, **changes))  # type: ignore[arg-type]
    return moved


def merged(cases: list[list[Event]]) -> list[Event]:
    """The cases interleaved by event time, each keeping its own order (the out-of-order
    case stays out of order): the next event is always the earliest head of a case, so no
    event lands further behind another case's than its own case puts it."""
    queues = [collections.deque(case) for case in cases]
    out: list[Event] = []
    while any(queues):
        head = min((q for q in queues if q), key=lambda q: q[0].occurred_at)
        out.append(head.popleft())
    return out


def all_cases_as_one_stream() -> list[Event]:
    last_at = time.time_ns() // 1_000_000 - 3 * kh.DAY_MS
    cases = [namespaced(kh.recent(events_of(case / "events.jsonl"), last_at), f"{case.name}-")
             for case in example_cases()]
    return merged(cases)


# -- Prometheus ---------------------------------------------------------------------------


@dataclasses.dataclass
class Prometheus:
    """One Prometheus server on 127.0.0.1, its data and log in a temporary dir."""

    workdir: Path
    port: int = dataclasses.field(default_factory=kh.free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, targets: list[str],
                     other_jobs: dict[str, list[str]] | None = None) -> Path:
        """The project's prometheus.yml with its targets, intervals and paths changed
        (`targets`: the workers'; `other_jobs`: other jobs' targets, by job name)."""
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
        # No Alertmanager here: a closed local port (Prometheus logs failed sends, no more).
        for manager in config["alerting"]["alertmanagers"]:
            for static in manager["static_configs"]:
                static["targets"] = [f"127.0.0.1:{kh.free_port()}"]
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        for name, job_targets in {**(other_jobs or {}), JOB: targets}.items():
            jobs[name]["static_configs"] = [{"targets": job_targets}]
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self, targets: list[str],
              other_jobs: dict[str, list[str]] | None = None) -> Prometheus:
        config = self.write_config(targets, other_jobs)
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                [str(PROMETHEUS), f"--config.file={config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()
        kh.wait_until(self.ready, timeout=30, interval=0.2, what="Prometheus to be ready",
                      on_timeout=self.tail)
        return self

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited with {self.process.returncode}:\n"
                                 f"{self.tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(FileNotFoundError):
            text = (self.workdir / "prometheus.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        return [t for t in self.api("targets")["activeTargets"]
                if t["labels"].get("job") == JOB]

    def firing(self) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["state"] == "firing"]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    if not PROMETHEUS.exists():
        pytest.fail(f"{PROMETHEUS} is missing: install Debian's packages with "
                    "deploy/packages.sh", pytrace=False)
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    server = Prometheus(workdir)
    try:
        yield server
    finally:
        server.stop()




# -- the test -----------------------------------------------------------------------------


def findings_by_rule(server: Prometheus) -> dict[str, float]:
    rows = server.query(f'sum by (rule) (consentwatch_findings_total{{job="{JOB}"}})')
    # Series pre-created at 0 (rules with no finding) are left out.
    return {row["metric"]["rule"]: float(row["value"][1]) for row in rows
            if float(row["value"][1])}


def wait_for(server: Prometheus, predicate: Callable[[], Any], what: str,
             timeout: float) -> None:
    def explain() -> str:
        targets = server.targets()
        down = [f"{t['scrapeUrl']}: health {t['health']}, last error {t['lastError']!r}"
                for t in targets if t["health"] != "up"]
        lines = [f"findings by rule now: {findings_by_rule(server)}",
                 f"firing alerts: {sorted(a['labels']['alertname'] for a in server.firing())}"]
        if down:
            lines.insert(0, "Prometheus cannot scrape the worker's /metrics (is the metrics "
                         "endpoint wired into `consentwatch worker`?): " + "; ".join(down))
        return "\n".join(lines)

    kh.wait_until(predicate, timeout=timeout, interval=0.5, what=what, on_timeout=explain)


def test_prometheus_scrapes_the_findings_and_fires_the_critical_alert(
        kafka_bootstrap: str, workers: kh.Workers, prometheus: Prometheus,
        tmp_path: Path) -> None:
    expected = expected_counts()
    assert expected["pseudonym-deanonymized"] >= 1, f"no such case under {EXAMPLES_DIR}"
    events = all_cases_as_one_stream()
    stream = tmp_path / "events.jsonl"
    kh.write_jsonl(stream, events)
    # Combining the cases changed none of their findings.
    assert collections.Counter(f["rule"] for f in kh.replay_findings(events)) == expected

    pipeline = kh.Pipeline(kafka_bootstrap, f"t-scrape-{uuid.uuid4().hex[:8]}")
    pipeline.create_topics()
    worker = workers.start(pipeline.prefix)
    prometheus.start([f"127.0.0.1:{worker.web_port}"])
    pipeline.wait_assigned(timeout=120)
    pipeline.produce(stream)
    pipeline.wait_consumed(timeout=120)
    pipeline.end_of_input()
    pipeline.wait_consumed(timeout=120)
    assert worker.running(), f"the worker exited:\n{worker.tail()}"

    wait_for(prometheus, lambda: any(t["health"] == "up" for t in prometheus.targets()),
             "Prometheus to scrape the worker", timeout=15)
    wait_for(prometheus, lambda: findings_by_rule(prometheus) == dict(expected),
             f"the findings counters to reach {dict(expected)}", timeout=20)
    wait_for(prometheus, lambda: any(a["labels"]["alertname"] == CRITICAL_ALERT
                                     for a in prometheus.firing()),
             f"{CRITICAL_ALERT} to fire", timeout=15)

    (alert,) = [a for a in prometheus.firing() if a["labels"]["alertname"] == CRITICAL_ALERT]
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["rule"] == "pseudonym-deanonymized"
    assert alert["annotations"]["runbook_url"].endswith(
        "docs/runbooks/consentwatch-pseudonym-deanonymized.md")
    up = prometheus.query(f'up{{job="{JOB}"}}')
    assert [float(row["value"][1]) for row in up] == [1.0]
