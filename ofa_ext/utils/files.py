"""Atomic file writes: a reader never sees a half-written file, an interrupted run loses nothing."""

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, Path]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    The file gets the permissions an ordinary new file would (umask applied), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def folder_writable(folder: PathLike) -> bool:
    """Writable by us *and* not marked read-only (root passes ``os.access`` on any folder, but a
    folder without write bits is meant to stay untouched)."""
    try:
        mode = Path(folder).stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def require_writable_folder(folder: PathLike, option: str) -> Path:
    """Create `folder` if needed and check that files can be written there, before any long pass."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{option} {path}: exists and is not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not folder_writable(existing):  # checked before creating anything (root may write anywhere)
            raise PermissionError
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        reason = e.strerror or "no write permission"
        raise PermissionError(f"{option} {path}: cannot write there ({reason}); expected a writable folder") from None
    return path
