"""Owner-only files and folders: everything labkit writes that holds prompts or replies
(traces, cache, results files, exported configs, reports) is readable by its owner alone."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["private_dir", "private_file"]


def private_dir(path: Path) -> None:
    """Create `path` (and parents) with the folder itself owner-only (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def private_file(path: Path) -> None:
    """Create `path` empty and owner-only (0600) if missing, else make it owner-only (a file
    someone else owns is left as it is). SQLite gives its -wal and -shm files the mode of the
    database file, so creating the database this way covers them too."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.is_file():
            with contextlib.suppress(PermissionError):
                os.chmod(path, 0o600)
        return
    os.close(fd)
    os.chmod(path, 0o600)
