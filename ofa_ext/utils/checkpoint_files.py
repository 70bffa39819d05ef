"""Checkpoint files on disk: is one complete, and a save folder left clean after a kill.

fairseq writes the first checkpoint of a save atomically (`X.pt.tmp`, then a rename) but copies it
to the others (`checkpoint_best.pt`, `checkpoint_last.pt`) with a plain copy, so a kill or a full
disk during a copy leaves a truncated file, and a kill during the first write a stale `X.pt.tmp`.
:func:`repair_save_dir` runs when training starts (any entry point): it removes stale temporary
files, restores a truncated `checkpoint_last.pt` from the newest complete checkpoint beside it
(the file it was being copied from) and removes other truncated checkpoints (the resumed run
writes them again when it passes the same point). `ofa-train` also makes the copies atomic
(:func:`atomic_copy`), so no truncated file is ever left.

torch (>= 1.6) writes checkpoints as zip archives whose directory sits at the end of the file, so
reading the directory tells a complete file from a truncated one without loading any tensor.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Optional, Union

from .files import atomic_path

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # torch's legacy format starts with a pickle PROTO opcode (then the protocol, 2..5)
_CHECKPOINT_NAME = re.compile(r"^checkpoint.*\.pt$")
_TMP_NAME = re.compile(r"^(checkpoint.*\.pt\.tmp|\.checkpoint.*\.tmp)$")  # fairseq's and ours (atomic_path)


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be read; the message names the file and what is wrong."""


def diagnose(path: PathLike) -> Optional[str]:
    """Why `path` is not a complete torch checkpoint (missing, empty, truncated, not a checkpoint),
    or None when it looks complete. Legacy (pre-zip) files are only checked for their first byte."""
    p = Path(path)
    if not p.exists():
        return "no such checkpoint file"
    if p.is_dir():
        return "is a folder, not a checkpoint file"
    size = p.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes; a save was interrupted or the disk was full)"
    with open(p, "rb") as f:
        head = f.read(4)
    if head == _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(p) as z:
                z.infolist()
        except (zipfile.BadZipFile, OSError, EOFError):
            return (f"the file is truncated or corrupt ({size} bytes, the end of its zip archive is missing; a save "
                    "was interrupted or the disk was full)")
        return None
    if head[:1] == bytes([_PICKLE_PROTO]) and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return None
    return (f"not a torch checkpoint ({size} bytes starting with {head!r}: neither a zip archive (torch >= 1.6) "
            "nor a pickle (older torch))")


def checkpoint_updates(path: PathLike) -> Optional[int]:
    """The update count a complete fairseq checkpoint was saved at (None: no such file, incomplete,
    or no optimizer history). Tensors are memory-mapped, not read: the cost is the pickled header."""
    p = Path(path)
    if diagnose(p) is not None:
        return None
    import torch

    from . import safe_load  # noqa: F401  (fairseq's config classes for the safe loader)

    with open(p, "rb") as f:
        zipped = f.read(4) == _ZIP_MAGIC
    state = torch.load(p, map_location="cpu", mmap=zipped, weights_only=True)
    history = (state.get("optimizer_history") if isinstance(state, dict) else None) or [{}]
    updates = history[-1].get("num_updates")
    return int(updates) if updates is not None else None


def check_checkpoint_file(path: PathLike, what: str = "checkpoint") -> None:
    """Raise :class:`CheckpointFileError` naming `what` (e.g. the option) unless `path` looks complete."""
    problem = diagnose(path)
    if problem is not None:
        raise CheckpointFileError(f"{what} {path}: {problem}")


def atomic_copy(src: PathLike, dst: PathLike) -> str:
    """Copy `src` to `dst` through a temporary file and one rename: `dst` is old or new, never partial.

    On a full disk the temporary file is removed and `dst` keeps its previous content.
    """
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    return str(dst)


def _restore_source(save_dir: Path, broken: Path) -> Optional[Path]:
    """The newest complete checkpoint in `save_dir` other than `broken` (a save writes its first file
    completely, then copies it: the newest complete one is what `broken` was being copied from)."""
    candidates = [p for p in save_dir.iterdir() if _CHECKPOINT_NAME.match(p.name) and p != broken and p.is_file()]
    candidates = [p for p in candidates if diagnose(p) is None]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns, default=None)


def repair_save_dir(save_dir: PathLike, last_name: str = "checkpoint_last.pt") -> list[str]:
    """Remove stale temporary files and truncated checkpoints left by a kill; returns what was done.

    A truncated `last_name` is replaced by the newest complete checkpoint beside it; without one it
    is an error (resuming from it would fail, starting over would discard the run silently).
    """
    folder = Path(save_dir)
    if not folder.is_dir():
        return []
    actions = _LoggedList()
    for p in sorted(folder.iterdir()):
        if _TMP_NAME.match(p.name) and p.is_file():
            p.unlink()
            actions.append(f"removed stale temporary file {p} (left by an interrupted save)")
    for p in sorted(folder.iterdir()):
        if not (_CHECKPOINT_NAME.match(p.name) and p.is_file()):
            continue
        problem = diagnose(p)
        if problem is None:
            continue
        if p.name == last_name:
            source = _restore_source(folder, p)
            if source is None:
                raise CheckpointFileError(
                    f"{p}: {problem}, and no complete checkpoint beside it to recover from; remove it to start "
                    "over, or pass --restore-file with a complete checkpoint"
                )
            atomic_copy(source, p)
            actions.append(f"{p}: {problem}; recovered it from {source.name} (the checkpoint it was copied from)")
        else:
            p.unlink()
            actions.append(f"{p}: {problem}; removed it (resuming from {last_name}; the run writes it again "
                           "when it reaches that point)")
    return list(actions)


class _LoggedList(list):
    """Each action is logged as it happens (a kill during the repair still leaves its trace)."""

    def append(self, action: str) -> None:
        logger.warning("%s", action)
        super().append(action)


def check_training_start(save_dir: PathLike, restore_file: Optional[str], finetune_from_model: Optional[str],
                         suffix: str = "") -> list[str]:
    """Before fairseq loads anything: repair `save_dir` and check the file the run will start from.

    Mirrors fairseq's choice: `checkpoint_last.pt` of `save_dir` when it exists, else
    `--finetune-from-model`; an explicit `--restore-file` must exist (fairseq would silently start
    from scratch).
    """
    last = f"checkpoint_last{suffix}.pt"
    actions = repair_save_dir(save_dir, last)
    if restore_file and restore_file != "checkpoint_last.pt":
        path = restore_file.replace(".pt", suffix + ".pt") if suffix else restore_file
        check_checkpoint_file(path, "--restore-file")
    elif finetune_from_model and not (Path(save_dir) / last).exists():
        check_checkpoint_file(finetune_from_model, "--finetune-from-model")
    return actions
