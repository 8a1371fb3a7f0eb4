"""One worker per data dir: an exclusive lock held for the worker's lifetime.

Two workers on one data dir share its RocksDB files: the second loops on Faust's
"DB for partition N is locked", holds the partitions the group gave it without
deciding them, and stalls every correlate partition that waits for its inputs.
The lock (`flock`, released by the kernel when the process dies, even by kill -9)
makes the second worker stop at once, with one line that says what to do.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from streams.errors import ConsentwatchError

__all__ = ["DataDirInUse", "lock_data_dir"]

LOCK_NAME = ".consentwatch-worker.lock"


class DataDirInUse(ConsentwatchError):
    """Another live process holds the data dir."""


def lock_data_dir(folder: Path) -> IO[str]:
    """Lock `folder` (created if missing) for this process; keep the returned file open.

    Raises DataDirInUse when another process holds it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 (held open: it is the lock)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DataDirInUse(
            f"the data dir {folder} is in use by another worker ({holder}); give each "
            "worker its own --data-dir (or CONSENTWATCH_DATA_DIR)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle
