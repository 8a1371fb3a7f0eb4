"""The metrics as text: the body of the worker's `/metrics` page, and a textfile.

Both bring the engines' counters up to date first (`PipelineMetrics.sync`).
The textfile is what node_exporter's textfile collector reads for batch jobs;
prometheus-client writes it to a temporary file and renames it, so a scrape never
sees half of it.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import write_to_textfile
from prometheus_client.exposition import choose_encoder

from streams.errors import ConfigError
from streams.metrics.pipeline import PipelineMetrics

__all__ = ["exposition", "write_textfile"]


def exposition(metrics: PipelineMetrics, accept: str | None = None) -> tuple[bytes, str]:
    """(body, Content-Type) for a scrape whose Accept header is `accept`."""
    metrics.sync()
    encode, content_type = choose_encoder(accept or "")
    return encode(metrics.registry), content_type


def write_textfile(metrics: PipelineMetrics, path: Path) -> None:
    """Write every metric to `path` in the text format, atomically."""
    metrics.sync()
    try:
        write_to_textfile(str(path), metrics.registry)
    except OSError as exc:
        raise ConfigError(f"cannot write metrics to {path}: {exc.strerror}") from None
