"""Random access to the rows of a large TSV file (OFA's data format).

OFA's own reader streams a file handle in file order. Random access lets fairseq samplers, rank
slices and DataLoader workers pick any row: we scan the file once for line boundaries (in fixed-size
chunks, so memory does not grow with row size) and keep the byte offset of every line in numpy
arrays. The scan is cached next to the TSV (``<file>.index.npz``, keyed by size and mtime) when that
folder is writable (and not marked read-only); otherwise it lives in memory only.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ..utils.files import atomic_path, folder_writable

logger = logging.getLogger(__name__)

_CHUNK = 4 << 20
_INDEX_VERSION = 2  # 2: whitespace-only lines are empty
_MAX_ROW_WARNINGS = 100


class BadRowError(ValueError):
    """A row that cannot be used; the message names the file and the 1-based line number."""


def parse_selected_cols(selected_cols: Union[None, str, Sequence[int]]) -> Optional[List[int]]:
    """``"0,4,2,3"`` (OFA's ``--selected-cols``) or a list of ints → list of column indices."""
    if selected_cols is None or selected_cols == "":
        return None
    if isinstance(selected_cols, str):
        try:
            cols = [int(c) for c in selected_cols.split(",")]
        except ValueError:
            raise ValueError(f"selected_cols must be comma-separated integers like '0,4,2,3', got {selected_cols!r}") from None
    else:
        cols = [int(c) for c in selected_cols]
    if any(c < 0 for c in cols):
        raise ValueError(f"selected_cols must be >= 0, got {selected_cols!r}")
    return cols


@dataclass
class LineIndex:
    """Byte span and column count of every line of a file (``ncols == 0`` marks an empty line)."""

    starts: np.ndarray  # int64 [L], offset of the first byte of each line
    ends: np.ndarray  # int64 [L], offset of its newline (or EOF)
    ncols: np.ndarray  # int32 [L]


def scan_lines(path: Path, separator: bytes = b"\t") -> LineIndex:
    """One pass over ``path`` in chunks; returns line spans and per-line column counts."""
    if len(separator) != 1:
        raise ValueError(f"separator must be one byte, got {separator!r}")
    sep, nl = separator[0], ord("\n")
    newline_parts, sepcount_parts = [], []
    seps_before = 0
    pos = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            buf = np.frombuffer(chunk, dtype=np.uint8)
            nls = np.flatnonzero(buf == nl)
            seps = np.flatnonzero(buf == sep)
            # separators seen before each newline (cumulative over the whole file)
            newline_parts.append(nls.astype(np.int64) + pos)
            sepcount_parts.append(np.searchsorted(seps, nls).astype(np.int64) + seps_before)
            seps_before += len(seps)
            pos += len(chunk)
    size = pos
    ends = np.concatenate(newline_parts) if newline_parts else np.zeros(0, np.int64)
    cum = np.concatenate(sepcount_parts) if sepcount_parts else np.zeros(0, np.int64)
    if size > 0 and (len(ends) == 0 or ends[-1] != size - 1):  # last line without a newline
        ends = np.append(ends, size)
        cum = np.append(cum, seps_before)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64) if len(ends) else np.zeros(0, np.int64)
    ncols = (np.diff(np.concatenate([[0], cum])) + 1).astype(np.int32)
    ncols[ends - starts == 0] = 0
    _mark_blank_lines(path, starts, ends, ncols)
    return LineIndex(starts=starts, ends=ends.astype(np.int64), ncols=ncols)


def _mark_blank_lines(path: Path, starts: np.ndarray, ends: np.ndarray, ncols: np.ndarray, longest: int = 64) -> None:
    """Whitespace-only lines (``\r`` of a CRLF file, stray spaces) count as empty, like empty lines.
    Only short lines without a separator can be blank, so only those are read."""
    candidates = np.flatnonzero((ncols == 1) & (ends - starts <= longest))
    if not len(candidates):
        return
    with open(path, "rb") as f:
        for line in candidates:
            f.seek(int(starts[line]))
            if not f.read(int(ends[line] - starts[line])).strip():
                ncols[line] = 0


def _index_path(path: Path) -> Path:
    return path.with_name(path.name + ".index.npz")


def load_line_index(path: Path, separator: str = "\t", use_cache: bool = True) -> LineIndex:
    """:func:`scan_lines`, reusing/writing the sidecar cache when it matches size, mtime and separator."""
    st = path.stat()
    key = np.array([_INDEX_VERSION, st.st_size, st.st_mtime_ns, ord(separator)], dtype=np.int64)
    cache = _index_path(path)
    if use_cache and cache.is_file():
        try:
            with np.load(cache) as z:
                if np.array_equal(z["key"], key):
                    return LineIndex(starts=z["starts"], ends=z["ends"], ncols=z["ncols"])
        except Exception as exc:  # a corrupt cache is rebuilt, never trusted
            logger.warning("ignoring unreadable TSV index %s: %s", cache, exc)
    index = scan_lines(path, separator.encode())
    if use_cache and folder_writable(path.parent):
        try:
            with atomic_path(cache) as tmp, open(tmp, "wb") as f:
                np.savez(f, key=key, starts=index.starts, ends=index.ends, ncols=index.ncols)
        except OSError:  # read-only folder: keep the index in memory only
            pass
    return index


class TSVReader:
    """Random-access rows of a TSV file, returning the ``selected_cols`` of each row as strings.

    Empty lines are ignored. Every non-empty line must have ``expected_cols`` columns (default: as
    many as the first non-empty line); otherwise construction fails naming the file and line, unless
    ``skip_bad_rows`` is set, in which case such lines are dropped and counted in ``num_bad_rows``.
    The file handle is opened lazily per process, so the reader can be used in DataLoader workers.
    """

    def __init__(
        self,
        path: Union[str, Path],
        selected_cols: Union[None, str, Sequence[int]] = None,
        separator: str = "\t",
        expected_cols: Optional[int] = None,
        skip_bad_rows: bool = False,
        use_cache: bool = True,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TSV file not found: {self.path}")
        self.separator = separator
        self.selected_cols = parse_selected_cols(selected_cols)
        index = load_line_index(self.path, separator, use_cache=use_cache)
        self._starts, self._ends = index.starts, index.ends
        nonempty = np.flatnonzero(index.ncols > 0)
        if expected_cols is None:
            expected_cols = int(index.ncols[nonempty[0]]) if len(nonempty) else 0
        self.expected_cols = expected_cols
        if self.selected_cols and len(nonempty) and max(self.selected_cols) >= expected_cols:
            raise ValueError(
                f"{self.path}: selected_cols {self.selected_cols} need at least {max(self.selected_cols) + 1} "
                f"columns but the file has {expected_cols}"
            )
        good = index.ncols[nonempty] == expected_cols
        bad = nonempty[~good]
        if len(bad) and not skip_bad_rows:
            line = int(bad[0])
            raise BadRowError(
                f"{self.path}:{line + 1}: expected {expected_cols} tab-separated columns, found "
                f"{int(index.ncols[line])} ({len(bad)} bad line(s) in total; --skip-bad-rows skips and counts them)"
            )
        for line in bad[:_MAX_ROW_WARNINGS]:
            logger.warning("skipping bad row: %s:%d: expected %d tab-separated columns, found %d",
                           self.path, int(line) + 1, expected_cols, int(index.ncols[line]))
        if len(bad):
            more = f" (warnings for the first {_MAX_ROW_WARNINGS} only)" if len(bad) > _MAX_ROW_WARNINGS else ""
            logger.warning("%s: %d line(s) skipped with a column count other than %d%s",
                           self.path, len(bad), expected_cols, more)
        self.num_bad_rows = int(len(bad))
        self._rows = nonempty[good].astype(np.int64)  # line numbers (0-based) of the usable rows
        self._fh = None
        self._fh_pid = None

    # -- file handle, reopened per process ---------------------------------------------------------
    def _file(self):
        pid = os.getpid()
        if self._fh is None or self._fh_pid != pid:
            self._fh = open(self.path, "rb")
            self._fh_pid = pid
        return self._fh

    def close(self) -> None:
        if self._fh is not None and self._fh_pid == os.getpid():
            self._fh.close()
        self._fh = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fh"] = None
        state["_fh_pid"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- access ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def line_number(self, i: int) -> int:
        """1-based line number in the file of row ``i`` (for error messages)."""
        return int(self._rows[i]) + 1

    def location(self, i: int) -> str:
        """``file:line`` of row ``i``."""
        return f"{self.path}:{self.line_number(i)}"

    def raw_row(self, i: int) -> List[str]:
        """All columns of row ``i``."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for {self.path} ({n} rows)")
        line = self._rows[i]
        start, end = int(self._starts[line]), int(self._ends[line])
        f = self._file()
        f.seek(start)
        data = f.read(end - start)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRowError(f"{self.path}:{line + 1}: not valid UTF-8 ({exc})") from None
        if text.endswith("\r"):
            text = text[:-1]
        return text.split(self.separator)

    def column(self, i: int, col: int, block: int = 4096) -> str:
        """Column ``col`` (file numbering) of row ``i``, reading only the start of the line.

        Cheap for short columns before a long one (e.g. the text before the base64 image), which is
        what computing token counts for fairseq's batching needs.
        """
        line = self._rows[i]
        start, end = int(self._starts[line]), int(self._ends[line])
        sep = self.separator.encode()
        f = self._file()
        data = b""
        while True:
            f.seek(start + len(data))
            data += f.read(min(block, end - start - len(data)))
            if data.count(sep) > col or start + len(data) >= end:
                break
            block *= 2
        parts = data.split(sep)
        if col >= len(parts) or (col == len(parts) - 1 and start + len(data) < end):
            return self.raw_row(i)[col]  # column is the (unterminated) last one: read the whole line
        try:
            text = parts[col].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRowError(f"{self.path}:{line + 1}: not valid UTF-8 ({exc})") from None
        return text[:-1] if text.endswith("\r") and col == len(parts) - 1 else text

    def __getitem__(self, i: int) -> List[str]:
        cols = self.raw_row(i)
        if self.selected_cols is None:
            return cols
        return [cols[c] for c in self.selected_cols]

    # -- distributed slicing -----------------------------------------------------------------------
    def slice_for_rank(self, rank: int, world: int) -> "TSVReader":
        """The contiguous block of rows rank ``rank`` of ``world`` reads, as OFA splits a file:
        ``len // world`` rows each, the first ``len % world`` ranks one more."""
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
        start, stop = rank_slice(len(self), rank, world)
        view = copy.copy(self)
        view._rows = self._rows[start:stop]
        view._fh = None
        view._fh_pid = None
        return view


def rank_slice(total: int, rank: int, world: int) -> tuple:
    """``(start, stop)`` of rank ``rank``'s contiguous share of ``total`` rows (refcoco.md §1.2)."""
    base, extra = divmod(total, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
