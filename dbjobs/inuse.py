"""A backup being read by a restore is marked by a shared `flock` on its file, so cleanup leaves it alone.

The lock belongs to the open descriptor the restore verifies and loads from: it needs no state
file, cannot be left behind by a killed job (the kernel drops it with the descriptor), and is
seen by every process on the host (and by NFS clients, where Linux maps it to a byte-range lock).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from dbjobs.errors import BackupNotFoundError


@contextmanager
def reading(path: Path) -> Iterator[BinaryIO]:
    """Open a backup's file once for a restore, marked in use until the block ends."""
    try:
        f = open(path, "rb")  # noqa: SIM115  (closed below, after the lock)
    except FileNotFoundError:
        raise BackupNotFoundError(f"{path.name}: the backup's file is gone (deleted by a cleanup?)") from None
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        yield f


def in_use(path: Path) -> bool:
    """Whether a live process holds an flock on `path`: a restore reading a backup (`reading`), or the
    writer of a partial file (`pipeline.atomic_file`). A missing file (or a symlink) is not in use."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False
