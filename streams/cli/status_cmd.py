"""`consentwatch status`: what a running worker is doing, read from its /metrics page."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime

import click

from streams.errors import ConfigError, ConsentwatchError
from streams.metrics.reader import WorkerStatus, parse_status

__all__ = ["WorkerUnreachable", "format_age", "render_status", "status"]

_TIMEOUT_S = 5.0
_ANY_ADDRESS = {"0.0.0.0", "::", ""}  # a worker listening on every address: ask loopback


class WorkerUnreachable(ConsentwatchError):
    """The worker's metrics page could not be read."""


@click.command()
@click.option("--url", metavar="URL",
              help="The worker's metrics page [default: http://WEB_HOST:WEB_PORT/metrics].")
@click.option("--web-port", type=click.IntRange(1, 65_535), default=6066, show_default=True,
              envvar="CONSENTWATCH_WEB_PORT", help="The worker's web port.")
@click.option("--web-host", default="127.0.0.1", show_default=True,
              envvar="CONSENTWATCH_WEB_HOST", help="The worker's web address.")
def status(url: str | None, web_port: int, web_host: str) -> int:
    """Show a running worker's partitions: watermark, pending decisions, lag, dead letters."""
    url = url or _default_url(web_host, web_port)
    worker = parse_status(fetch_metrics(url))
    click.echo(render_status(worker, url, time.time()), nl=False)
    return 0


def _default_url(host: str, port: int) -> str:
    host = "127.0.0.1" if host in _ANY_ADDRESS else host
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"


def fetch_metrics(url: str) -> str:
    """The text of the metrics page at `url`, or one line saying why there is none."""
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url must be an http:// or https:// address, not {url!r}")
    try:
        request = urllib.request.Request(url, headers={"Accept": "text/plain"})
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            body: bytes = response.read()
    except urllib.error.HTTPError as exc:
        raise WorkerUnreachable(f"the worker at {url} answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, str) else _describe(exc.reason)
        raise WorkerUnreachable(f"cannot reach the worker at {url}: {reason} "
                                "(is `consentwatch worker` running?)") from None
    except (OSError, ValueError) as exc:
        raise WorkerUnreachable(f"cannot reach the worker at {url}: {_describe(exc)}") from None
    return body.decode("utf-8", errors="replace")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {_TIMEOUT_S:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


def render_status(worker: WorkerStatus, url: str, now: float) -> str:
    """The status as text: a table of the correlate partitions, input lag, dead letters."""
    from rich.console import Console

    out = io.StringIO()
    console = Console(width=120, file=out, color_system=None)
    console.print(f"consentwatch worker {worker.version} at {url}")
    if worker.partitions:
        console.print(_partitions_table(worker, now))
    else:
        console.print("no correlate partitions assigned to this worker yet")
    lag = sum(worker.input_lag.values())
    console.print(f"input lag: {lag} records on {len(worker.input_lag)} input partitions")
    console.print(_dead_letters_table(worker) if worker.dead_letters else "dead letters: none")
    return out.getvalue()


def _partitions_table(worker: WorkerStatus, now: float) -> object:
    from rich.table import Table

    table = Table(title="correlate partitions", title_justify="left")
    for heading in ("partition", "watermark (UTC)", "age", "pending decisions",
                    "subjects", "consumer lag"):
        table.add_column(heading, justify="left" if heading.startswith("watermark") else "right")
    for number in sorted(worker.partitions):
        part = worker.partitions[number]
        if part.watermark_s is None:
            watermark, age = "-", "-"
        else:
            watermark = datetime.fromtimestamp(part.watermark_s, UTC).strftime(
                "%Y-%m-%d %H:%M:%SZ")
            lag_s = part.watermark_lag_s
            age = format_age(lag_s if lag_s is not None else now - part.watermark_s)
        consumer_lag = "-" if part.consumer_lag is None else str(part.consumer_lag)
        table.add_row(str(number), watermark, age, str(part.pending), str(part.subjects),
                      consumer_lag)
    return table


def _dead_letters_table(worker: WorkerStatus) -> object:
    from rich.table import Table

    table = Table(title="dead letters", title_justify="left")
    table.add_column("reason")
    table.add_column("records", justify="right")
    for reason, count in sorted(worker.dead_letters.items()):
        table.add_row(reason, str(count))
    return table


def format_age(seconds: float) -> str:
    """A duration in its two largest units: `45s`, `3m 04s`, `2h 05m`, `3d 04h`."""
    if seconds < 0:
        return f"-{format_age(-seconds)}"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"

