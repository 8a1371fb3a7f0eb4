"""`consentwatch demo`: the whole product in about a minute, on a real local broker.

Starts a broker (deploy/kafka/kafka.sh), creates the topics under a fresh prefix,
starts a worker (with its /metrics endpoint), produces simulated traffic at a rate
while showing progress, then closes the run, waits for every decision, and scores
the findings against the simulator's ground truth. If the evidence commands are
installed it loads the findings into a ledger, exports a signed bundle and verifies
it. Everything it started is stopped at the end, also on Ctrl-C or SIGTERM: the
broker and the worker run in their own sessions (a terminal's Ctrl-C reaches only
the demo) and the demo's `finally` stops both.

Event time runs as fast as the wall clock (the simulator's event rate is the
production rate), as on a live platform, so the rules about the past decide while
the traffic flows. Closing the run: the last triggers wait for the watermark to pass
their time plus the notice grace (300 s of event time); rather than wait that long
for the idle advance, once the worker has consumed every input record the demo puts
an end-of-input control record on every input partition (streams/pipeline/control.py:
not an event, it only lets the worker decide everything it has read).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click
import orjson

from streams.cli.options import Finite
from streams.errors import ConfigError, ConsentwatchError
from streams.model.events import Event
from streams.model.timestamps import format_ms

__all__ = ["demo"]

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
TSA_SH = ROOT / "deploy" / "tsa" / "tsa.sh"
_STOP_GRACE_S = 5.0  # then SIGKILL: a stop takes seconds, never minutes


def _desk_bind(_ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    """A loopback HOST:PORT (port 0: a free one). The demo's desk serves plain http, which
    `desk serve` allows on loopback only; checked before a minute of work."""
    import ipaddress

    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
        number = int(port)
        if not sep or not 0 <= number < 65536:
            raise ValueError
    except ValueError:
        raise click.BadParameter("HOST:PORT with an IP address, e.g. 127.0.0.1:0 or "
                                 "127.0.0.1:8080", param=param) from None
    if not loopback:
        raise click.BadParameter(f"{host} is not a loopback address: the demo's desk serves "
                                 "plain http (consentwatch desk serve has TLS for more)",
                                 param=param)
    return host, number


@click.command()
@click.option("--duration", type=Finite(min=1, max=3_600), default=60,
              show_default=True, metavar="SECONDS", help="How long to produce traffic.")
@click.option("--rate", type=Finite(min=1, max=100_000), default=200,
              show_default=True, metavar="EVENTS_PER_S", help="Events produced per second.")
@click.option("--seed", type=int, default=1, show_default=True, help="Simulator seed.")
@click.option("--partitions", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("var/demo"), show_default=True,
              help="Each run writes its findings, truth and evidence bundle to a new folder "
                   "OUT_DIR/<UTC time>/; OUT_DIR/latest points to the last one.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Broker and worker state (default: a temporary directory, removed after).")
@click.option("--drain-timeout", type=Finite(min=1), default=180, show_default=True,
              metavar="SECONDS", help="How long to wait for the worker to decide everything.")
@click.option("--desk/--no-desk", default=True, show_default=True,
              help="At the end, leave the review desk running on the run's ledger, with a "
                   "one-time admin login, until Ctrl-C.")
@click.option("--desk-bind", default="127.0.0.1:0", show_default=True, callback=_desk_bind,
              metavar="HOST:PORT", help="The desk's loopback address; port 0 picks a free "
                                        "port.")
def demo(duration: float, rate: float, seed: int, partitions: int, out_dir: Path,
         work_dir: Path | None, drain_timeout: float, desk: bool,
         desk_bind: tuple[str, int]) -> int:
    """Run broker, worker and simulator; score the findings; export and verify evidence;
    then show the findings in the review desk."""
    from streams.cli.demo_view import console

    if not KAFKA_SH.is_file():
        raise ConfigError(f"the demo needs {KAFKA_SH} (run it from a source checkout)")
    out = console()
    started = datetime.now(UTC)  # names the run's folder
    try:  # before a minute of work, not after it
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out-dir {out_dir}: {exc.strerror or exc}") from exc
    previous = signal.signal(signal.SIGTERM, _terminate)
    work = work_dir or Path(tempfile.mkdtemp(prefix="consentwatch-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    stack = _Processes(work)
    try:
        first_time = "" if (KAFKA_SH.parent / "lib" / ".pom.sha256").is_file() else (
            " (first run: fetching Kafka's jars from Maven Central, a minute or two)")
        out.print(f"starting a Kafka broker in {work / 'kafka'}{first_time} ...")
        broker = stack.start_broker()
        prefix = f"demo{int(time.time() * 1000) % 10**10}"
        out.print(f"broker {broker}; topics under prefix {prefix}")
        from streams.kafka.connection import KafkaConnection
        from streams.kafka.kafka_io import create_topics
        from streams.kafka.topics import TopicNames

        connection, names = KafkaConnection(bootstrap=broker), TopicNames(prefix)
        asyncio.run(create_topics(connection, names, partitions, 1))
        port = _free_port()
        stack.start_worker(broker, prefix, partitions, port)
        out.print(f"worker started: metrics at http://127.0.0.1:{port}/metrics "
                  f"(log {work / 'worker.log'})")
        run = _Run(connection, names, seed, round(duration * rate), rate, stack, drain_timeout)
        asyncio.run(run.main())
        try:
            run_dir = new_run_dir(out_dir, started)
        except OSError as exc:
            raise ConsentwatchError(f"cannot create this run's folder in {out_dir}: "
                                    f"{exc.strerror or exc}") from exc
        status = _report(run, run_dir, out_dir, work, out)
        if desk:  # a desk that did not start or stopped by itself fails the demo
            status = _show_desk(stack, work / "ledger.sqlite", desk_bind, out) or status
        return status
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        try:
            if stack.running():
                out.print(f"stopping the {stack.running()} ...")
            stack.stop()
            if work_dir is None:
                shutil.rmtree(work, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _Processes:
    """The broker, the worker and the desk, each in its own session, stopped by their own
    ids."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.kafka_dir = work / "kafka"
        self.broker_started = False
        self.worker: subprocess.Popen[bytes] | None = None
        self.desk: subprocess.Popen[bytes] | None = None

    def running(self) -> str:
        """What `stop` will stop, in words ("" when nothing)."""
        names = [name for name, on in (
            ("desk", self.desk is not None and self.desk.poll() is None),
            ("worker", self.worker is not None and self.worker.poll() is None),
            ("broker", self.broker_started)) if on]
        return " and the ".join([", the ".join(names[:-1]), names[-1]] if len(names) > 1
                                else names)

    def start_broker(self) -> str:
        self.broker_started = True  # even half-started, `stop` must run kafka.sh stop
        starter = subprocess.Popen([str(KAFKA_SH), "start", "--dir", str(self.kafka_dir)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
        try:
            stdout, stderr = starter.communicate(timeout=600)
        except BaseException:
            # Ctrl-C while the broker starts: end the start script at once (it may wait
            # minutes for a busy broker, holding the dir's lock); the broker writes its
            # pid before anything else, so `stop` still finds it.
            _end_group(starter, _STOP_GRACE_S)
            raise
        if starter.returncode != 0:
            last = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ConsentwatchError(f"the broker did not start: {last[0]}")
        return stdout.decode().strip()

    def start_worker(self, broker: str, prefix: str, partitions: int, port: int) -> None:
        with open(self.work / "worker.log", "ab") as log:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "streams.cli.app", "worker", "--broker", broker,
                 "--topic-prefix", prefix, "--data-dir", str(self.work / "worker"),
                 "--web-port", str(port), "--partitions", str(partitions),
                 "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def start_desk(self, ledger: Path, host: str, port: int) -> None:
        # The run's signing key (`_evidence`), so that the desk's export signs as the
        # demo's did: the same public key verifies both.
        key = self.work / "keys" / "consentwatch.key"
        signing = ["--private-key", str(key)] if key.is_file() else []
        with open(self.work / "desk.log", "ab") as log:
            self.desk = subprocess.Popen(
                [sys.executable, "-m", "streams.cli.app", "desk", "serve", "--ledger",
                 str(ledger), "--bind", f"{_url_host(host)}:{port}", *signing],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def worker_exit(self) -> int | None:
        return None if self.worker is None else self.worker.poll()

    def stop(self) -> None:
        """Within seconds, however busy the machine: the demo's broker and worker hold
        nothing that outlives the demo (delivery is at-least-once, the broker recovers),
        nor does the desk (each review or export it records is one ledger transaction;
        its sessions live in its memory)."""
        for process in (self.desk, self.worker):
            if process is not None:
                _end_group(process, _STOP_GRACE_S)
        if self.broker_started:
            subprocess.run([str(KAFKA_SH), "stop", "--dir", str(self.kafka_dir)],
                           capture_output=True, check=False, start_new_session=True,
                           timeout=120, env={**os.environ,
                                             "KAFKA_STOP_TIMEOUT": str(int(_STOP_GRACE_S))})
            self.broker_started = False


def _end_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to the process's group (its own session), SIGKILL after `grace_s`."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class _Run:
    """The asynchronous part: produce, follow the findings and the lag, show progress."""

    def __init__(self, connection: Any, names: Any, seed: int, events: int, rate: float,
                 processes: _Processes, drain_timeout: float) -> None:
        from streams.cli.demo_view import Progress

        self.connection, self.names = connection, names
        self.seed, self.events, self.rate = seed, events, rate
        self.processes, self.drain_timeout = processes, drain_timeout
        self.progress = Progress(events)
        self.expected: set[tuple[str, str, str]] = set()
        self.expected_lines: list[bytes] = []
        self.found: dict[str, dict[str, Any]] = {}  # finding_id -> finding
        self.last_event_ms = 0
        self.pending: int | None = None  # records of every topic the worker reads, unconsumed

    def found_keys(self) -> set[tuple[str, str, str]]:
        return {(f["rule"], f["subject_id"], f["trigger_event_id"]) for f in self.found.values()}

    def _traffic(self) -> Iterator[Event]:
        from streams.simulate import Expected, SimulationConfig, simulate

        def on_expected(e: Expected) -> None:
            self.expected.add((e.rule, e.subject_id, e.trigger_event_id))
            self.expected_lines.append(orjson.dumps(e.to_dict()))
            self.progress.expected[e.rule] += 1

        config = SimulationConfig(seed=self.seed, events=self.events, event_rate=self.rate)
        for event in simulate(config, on_expected):
            self.progress.produced += 1
            self.last_event_ms = max(self.last_event_ms, event.occurred_at)
            yield event

    async def main(self) -> None:
        from streams.kafka.kafka_io import produce_events
        from streams.pipeline.control import produce_end_of_input

        tasks = [asyncio.create_task(self._follow_findings()),
                 asyncio.create_task(self._watch_lag()),
                 asyncio.create_task(self._show())]
        try:
            self.progress.phase = "producing"
            await produce_events(self.connection, self.names, self._traffic(), rate=self.rate)
            self.progress.phase = "waiting for the worker to consume everything"
            await self._wait(lambda: self.progress.lag == 0)
            self.progress.phase = "closing the run"
            await produce_end_of_input(self.connection, self.names)
            self.progress.phase = "waiting for the worker's last decisions"
            await self._drain()
            self.progress.phase = "done"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _wait(self, done: Callable[[], bool]) -> bool:
        """Poll `done` until the drain timeout; False when it ran out."""
        deadline = time.monotonic() + self.drain_timeout
        while time.monotonic() < deadline:
            self._check_worker()
            if done():
                return True
            await asyncio.sleep(0.5)
        return False

    async def _drain(self) -> None:
        if await self._wait(lambda: self.pending == 0 and self.expected <= self.found_keys()):
            await asyncio.sleep(2.0)  # any finding beyond the truth would show up now

    def _check_worker(self) -> None:
        code = self.processes.worker_exit()
        if code is not None:
            raise ConsentwatchError(f"the worker stopped (exit status {code}); see "
                                    f"{self.processes.work / 'worker.log'}")

    async def _follow_findings(self) -> None:
        from streams.kafka.kafka_io import read_outputs
        from streams.model.findings import Finding

        while True:  # the topic exists; a broker hiccup only restarts the reading
            with contextlib.suppress(ConsentwatchError):
                async for item in read_outputs(self.connection, self.names.findings, True):
                    if isinstance(item, Finding) and item.finding_id not in self.found:
                        self.found[item.finding_id] = item.to_dict()
                        self.progress.found[item.rule] += 1
            await asyncio.sleep(1.0)

    async def _watch_lag(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        from streams.kafka.faust_adapter import refresh_metadata

        options = self.connection.aiokafka_options()
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **options)
        admin = AIOKafkaAdminClient(**options)
        await consumer.start()
        await admin.start()
        inputs = set(self.names.inputs.values())
        topics = [*inputs, self.names.correlate]
        try:
            while True:
                with contextlib.suppress(Exception):  # a rebalance: try again next time
                    tps = [TopicPartition(t, p) for t in topics
                           for p in consumer.partitions_for_topic(t) or ()]
                    if not tps:
                        await refresh_metadata(consumer)
                    end = await consumer.end_offsets(tps)
                    committed = await admin.list_consumer_group_offsets(self.names.group_id)
                    lag = {tp: max(0, end[tp] - (committed[tp].offset if tp in committed
                                                 else 0)) for tp in tps}
                    self.pending = sum(lag.values())
                    self.progress.lag = sum(n for tp, n in lag.items() if tp.topic in inputs)
                await asyncio.sleep(1.0)
        finally:
            await consumer.stop()
            await admin.close()

    async def _show(self) -> None:
        from rich.live import Live

        from streams.cli.demo_view import console, progress_line, progress_table

        out = console()
        if not out.is_terminal:
            while True:
                await asyncio.sleep(5.0)
                out.print(progress_line(self.progress))
        with Live(progress_table(self.progress), console=out, refresh_per_second=4) as live:
            while True:
                await asyncio.sleep(0.25)
                live.update(progress_table(self.progress))


_DESK_USER = "demo"
_DESK_START_S = 60.0  # the desk's first answer; an import on a busy machine takes seconds


def _show_desk(stack: _Processes, ledger: Path, bind: tuple[str, int], out: Any) -> int:
    """The desk on `ledger` until Ctrl-C or SIGTERM: 0 then, 1 when it could not start or
    stopped by itself. Its login is printed here only: the password goes to the ledger's
    users as an Argon2 hash, never to a log or a command line."""
    import secrets

    from rich.markup import escape

    from streams.desk import Database
    from streams.desk.users import add_user, list_users

    if not ledger.is_file():
        out.print("review desk skipped: this run wrote no ledger")
        return 0
    if stack.running():
        out.print(f"stopping the {stack.running()} (the desk needs only the ledger) ...")
        stack.stop()
    password = secrets.token_urlsafe(18)  # 24 characters, 144 bits
    db = Database(str(ledger))
    try:
        taken = {name for name, _, _ in list_users(db)}  # a --work-dir used again
        names = itertools.chain([_DESK_USER], (f"{_DESK_USER}{i}" for i in itertools.count(2)))
        name = next(n for n in names if n not in taken)
        add_user(db, name, "admin", password, now_ms=time.time_ns() // 1_000_000)
    finally:
        db.close()
    host, port = bind
    port = port or _free_port(host)
    stack.start_desk(ledger, host, port)
    url = f"http://{_url_host(host)}:{port}/"
    if not _desk_answers(stack, url):
        log = stack.work / "desk.log"
        last = _last_line(log.read_bytes() if log.is_file() else b"", b"").removeprefix(
            "error: ")
        out.print(f"[red]the review desk did not start[/]: "
                  f"{escape(last) or 'no answer in time'} (log {log})")
        return 1
    out.print(f"the review desk: {url} (log {stack.work / 'desk.log'})")
    out.print(f"sign in as {name} with the password {password} (an admin of this run's "
              "ledger; shown only here)")
    out.print("Ctrl-C stops the desk")
    assert stack.desk is not None
    try:
        code = stack.desk.wait()
    except KeyboardInterrupt:
        out.print("stopping the desk ...")
        stack.stop()
        return 0
    out.print(f"[red]the review desk stopped[/] (exit status {code}; see "
              f"{stack.work / 'desk.log'})")
    return 1


def _desk_answers(stack: _Processes, url: str) -> bool:
    """Whether the desk answers /healthz before the deadline (False when it exited)."""
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    deadline = time.monotonic() + _DESK_START_S
    while time.monotonic() < deadline:
        if stack.desk is None or stack.desk.poll() is not None:
            return False
        try:
            with direct.open(f"{url}healthz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _report(run: _Run, run_dir: Path, out_dir: Path, work: Path, out: Any) -> int:
    from streams.cli.demo_view import score, summary_table

    found = run.found_keys()
    out.print(summary_table(run.expected, found))
    result = score(run.expected, found)
    out.print(f"precision {result.precision:.3f} recall {result.recall:.3f} "
              f"({run.progress.produced:,} events, {len(found):,} findings)")
    findings_file, truth_file = run_dir / "findings.jsonl", run_dir / "truth.jsonl"
    findings_file.write_bytes(b"".join(orjson.dumps(f) + b"\n" for f in run.found.values()))
    truth_file.write_bytes(b"".join(line + b"\n" for line in run.expected_lines))
    out.print(f"this run's outputs: {shown(run_dir)}/ ({_point_latest(out_dir, run_dir)})")
    out.print(f"findings in {shown(findings_file)}, ground truth in {shown(truth_file)}")
    evidence_ok = _evidence(findings_file, run.found.values(), run_dir, work, out)
    return 0 if result.precision == result.recall == 1.0 and evidence_ok else 1


def new_run_dir(out_dir: Path, now: datetime) -> Path:
    """A new, empty folder for one run, named by its UTC time: a run never writes into
    another run's folder (a second run in the same second gets a suffix)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in itertools.count():
        run_dir = out_dir / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise AssertionError("unreachable")  # pragma: no cover


def point_latest(out_dir: Path, run_dir: Path) -> Path:
    """Point OUT_DIR/latest at `run_dir`, atomically: a new link renamed over the old one."""
    latest = out_dir / "latest"
    temporary = out_dir / f".latest.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(temporary, latest)
    return latest


def _point_latest(out_dir: Path, run_dir: Path) -> str:
    """`point_latest`, described in a few words; a `latest` that cannot be replaced (a
    folder of that name) only costs the link."""
    try:
        return f"also {shown(point_latest(out_dir, run_dir))}"
    except OSError as exc:
        return f"{shown(out_dir / 'latest')} not updated: {exc.strerror or exc}"


def shown(path: Path) -> str:
    """`path` as the user types it here: relative to the current directory when inside it."""
    absolute = Path(os.path.abspath(path))
    with contextlib.suppress(ValueError):
        return str(absolute.relative_to(Path.cwd()))
    return str(absolute)


def verify_command(bundle: Path, public_key: Path, tsa_cert: Path | None = None) -> str:
    """The `consentwatch verify` command line that checks `bundle`, from the current directory
    (and its time-stamp token against `tsa_cert`, when given)."""
    script = Path(sys.executable).parent / "consentwatch"  # the venv's console script
    program = shown(script) if script.is_file() else "consentwatch"
    if script.is_file() and "/" not in program:  # a bare name would be looked up on PATH
        program = f"./{program}"
    tsa = [] if tsa_cert is None else ["--tsa-cert", shown(tsa_cert)]
    return shlex.join([program, "verify", shown(bundle), "--public-key", shown(public_key),
                       *tsa])


def _has_command(*path: str) -> bool:
    """Whether the running `consentwatch` has the command `path` (read from the click
    context: the CLI's root group imports this module, not the other way round)."""
    context = click.get_current_context(silent=True)
    if context is None:
        return False
    command: Any = context.find_root().command
    for name in path:
        if not isinstance(command, click.Group):
            return False
        command = command.get_command(context, name)
        if command is None:
            return False
    return True


def _last_line(stdout: bytes, stderr: bytes) -> str:
    """A command's last line, without the `consentwatch: ` its messages start with (the
    demo says which step spoke)."""
    lines = (stdout + stderr).decode(errors="replace").strip().splitlines()
    return lines[-1].removeprefix("consentwatch: ") if lines else ""


def _evidence(findings_file: Path, findings: Iterable[dict[str, Any]], run_dir: Path,
              work: Path, out: Any) -> bool:
    """Ledger, signed export and verification, through the real commands; False on failure.

    The private key stays in the work directory; the public key is kept beside the
    bundle, so that the printed `verify` command works after the demo."""
    needed = (("keys", "generate"), ("ledger", "load"), ("export",), ("verify",))
    missing = [" ".join(p) for p in needed if not _has_command(*p)]
    if missing:
        out.print(f"evidence bundle skipped: `consentwatch {', '.join(missing)}` not available")
        return True
    times = [f["occurred_at"] for f in findings]
    if not times:
        out.print("evidence bundle skipped: no findings")
        return True
    keys, ledger, bundle = work / "keys", work / "ledger.sqlite", run_dir / "evidence-bundle"
    public_key = run_dir / "consentwatch.pub"
    env = {**os.environ, "CONSENTWATCH_SIGNING_KEY": str(keys / "consentwatch.key"),
           "CONSENTWATCH_LEDGER": str(ledger)}

    def step(*args: str) -> str | None:
        """The step's last line, or None (and a line saying so) when it failed."""
        done = subprocess.run([sys.executable, "-m", "streams.cli.app", *args], env=env,
                              capture_output=True, timeout=600, check=False)
        last = _last_line(done.stdout, done.stderr)
        if done.returncode != 0:
            out.print(f"[red]evidence: `consentwatch {' '.join(args[:2])}` failed[/]: "
                      f"{last or done.returncode}")
            return None
        return last

    if step("keys", "generate", "--out", str(keys)) is None:
        return False
    tsa_dir, tsa_cert = work / "tsa", run_dir / "tsa-ca.pem"
    tsa_url = _start_tsa(tsa_dir, out)
    try:
        return _export_and_verify(step, findings_file, times, keys, ledger, bundle,
                                  public_key, tsa_url, tsa_dir, tsa_cert, out)
    finally:
        if tsa_url is not None:
            subprocess.run([str(TSA_SH), "stop", "--dir", str(tsa_dir)], capture_output=True,
                           timeout=60, check=False)


def _start_tsa(tsa_dir: Path, out: Any) -> str | None:
    """The URL of the local RFC 3161 TSA (deploy/tsa/tsa.sh), or None (and a line
    saying so) when it cannot start: the bundle is then not time-stamped."""
    if shutil.which("openssl") is None:
        out.print("evidence: no openssl, so no local time-stamping authority: the "
                  "checkpoint is not time-stamped")
        return None
    def stop() -> None:
        subprocess.run([str(TSA_SH), "stop", "--dir", str(tsa_dir)], capture_output=True,
                       timeout=60, check=False)

    try:
        done = subprocess.run([str(TSA_SH), "start", "--dir", str(tsa_dir)],
                              capture_output=True, timeout=120, check=False)
    except BaseException:  # Ctrl-C mid-start: the server may be up already
        stop()
        raise
    if done.returncode != 0:
        stop()
        out.print("evidence: the local time-stamping authority did not start "
                  f"({_last_line(b'', done.stderr)}): the checkpoint is not time-stamped")
        return None
    return done.stdout.decode().strip()


def _export_and_verify(step: Callable[..., str | None], findings_file: Path,
                       times: list[int], keys: Path, ledger: Path, bundle: Path,
                       public_key: Path, tsa_url: str | None, tsa_dir: Path,
                       tsa_cert: Path, out: Any) -> bool:
    """The rest of `_evidence`: load, export (time-stamped by the local TSA when it
    runs), verify."""
    tsa = [] if tsa_url is None else ["--tsa-url", tsa_url]
    if tsa_url is not None:
        shutil.copyfile(tsa_dir / "ca.pem", tsa_cert)
    shutil.copyfile(keys / "consentwatch.pub", public_key)
    out.print(f"evidence: signing key pair generated; public key in {shown(public_key)}")
    for label, args in (
        ("ledger load", ["ledger", "load", str(findings_file), "--ledger", str(ledger)]),
        ("export", ["export", "--ledger", str(ledger), "--from", format_ms(min(times)),
                    "--to", format_ms(max(times) + 1), "--purpose", "consentwatch demo",
                    *tsa, str(bundle)]),
    ):
        if (last := step(*args)) is None:
            return False
        out.print(f"evidence: {label}: {last}")
    # What a regulator receives is the zip; export writes it beside the directory.
    sent = bundle.with_name(f"{bundle.name}.zip")
    sent = sent if sent.exists() else bundle
    checked = None if tsa_url is None else tsa_cert
    extra = [] if checked is None else ["--tsa-cert", str(checked)]
    if (last := step("verify", str(sent), "--public-key", str(public_key), *extra)) is None:
        return False
    out.print(f"evidence: verify: {last}")
    out.print(f"evidence bundle {shown(sent)} written and verified; verify it again with: "
              f"{verify_command(sent, public_key, checked)}")
    return True
