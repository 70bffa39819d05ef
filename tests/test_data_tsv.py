"""Random-access TSV reader: offsets, cache, bad rows, rank slices, DataLoader workers."""

import os
import pickle

import numpy as np
import pytest
import torch

from ofa_ext.data.tsv import BadRowError, TSVReader, parse_selected_cols, rank_slice, scan_lines


def _write(path, lines, end="\n", trailing=True):
    text = end.join(lines) + (end if trailing else "")
    path.write_bytes(text.encode("utf-8"))
    return path


def _rows(n, cols=5):
    return [[f"r{i}c{j}" + ("é" * (i % 3)) + "x" * (j * 50 * (i % 4)) for j in range(cols)] for i in range(n)]


def test_random_access_matches_python_split(tmp_path):
    rows = _rows(57)
    p = _write(tmp_path / "a.tsv", ["\t".join(r) for r in rows])
    r = TSVReader(p, use_cache=False)
    assert len(r) == 57 and r.expected_cols == 5
    for i in np.random.default_rng(0).permutation(57):
        assert r[i] == rows[i]
    assert r[-1] == rows[-1]
    with pytest.raises(IndexError):
        r[57]
    sel = TSVReader(p, selected_cols="0,4,2,3", use_cache=False)
    assert sel[3] == [rows[3][k] for k in (0, 4, 2, 3)]
    assert all(sel.column(i, c) == rows[i][c] for i in range(57) for c in range(5))


def test_small_chunks_and_line_endings(tmp_path, monkeypatch):
    import ofa_ext.data.tsv as tsv

    monkeypatch.setattr(tsv, "_CHUNK", 7)  # boundaries fall inside lines and columns
    rows = _rows(20, 3)
    for end, trailing in (("\n", True), ("\n", False), ("\r\n", True)):
        p = _write(tmp_path / "b.tsv", ["\t".join(r) for r in rows], end=end, trailing=trailing)
        r = TSVReader(p, use_cache=False)
        assert [r[i] for i in range(len(r))] == rows


def test_empty_lines_are_ignored_and_line_numbers_kept(tmp_path):
    p = _write(tmp_path / "c.tsv", ["a\tb", "", "c\td", "", ""])
    r = TSVReader(p, use_cache=False)
    assert len(r) == 2 and r[1] == ["c", "d"] and r.line_number(1) == 3


def test_bad_rows_error_or_skip(tmp_path):
    p = _write(tmp_path / "d.tsv", ["a\tb\tc", "d\te", "f\tg\th", "i\tj\tk\tl"])
    with pytest.raises(BadRowError, match=r"d\.tsv:2: expected 3 tab-separated columns, found 2"):
        TSVReader(p, use_cache=False)
    r = TSVReader(p, skip_bad_rows=True, use_cache=False)
    assert len(r) == 2 and r.num_bad_rows == 2 and r[1] == ["f", "g", "h"] and r.line_number(1) == 3
    with pytest.raises(ValueError, match="need at least 5 columns"):
        TSVReader(p, selected_cols="0,4", skip_bad_rows=True, use_cache=False)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_selected_cols("0;4")
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        TSVReader(tmp_path / "nope.tsv")


def test_invalid_utf8_names_line(tmp_path):
    p = tmp_path / "e.tsv"
    p.write_bytes(b"a\tb\n\xff\xfe\tc\n")
    r = TSVReader(p, use_cache=False)
    with pytest.raises(BadRowError, match=r"e\.tsv:2: not valid UTF-8"):
        r[1]


def test_sidecar_cache_reused_and_invalidated(tmp_path, monkeypatch):
    import ofa_ext.data.tsv as tsv

    p = _write(tmp_path / "f.tsv", ["a\tb", "c\td"])
    TSVReader(p)
    cache = tmp_path / "f.tsv.index.npz"
    assert cache.is_file()
    calls = []
    real = tsv.scan_lines
    monkeypatch.setattr(tsv, "scan_lines", lambda *a: calls.append(1) or real(*a))
    assert TSVReader(p)[1] == ["c", "d"] and not calls  # reused
    _write(p, ["a\tb", "c\td", "e\tf"])
    os.utime(p, ns=(1, 1))  # size and mtime changed
    r = TSVReader(p)
    assert len(r) == 3 and r[2] == ["e", "f"] and calls == [1]
    cache.write_bytes(b"garbage")
    assert len(TSVReader(p)) == 3  # corrupt cache is rebuilt


def test_read_only_folder_keeps_index_in_memory(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    p = _write(folder / "g.tsv", ["a\tb"])
    folder.chmod(0o555)
    try:
        assert TSVReader(p)[0] == ["a", "b"]
        assert not (folder / "g.tsv.index.npz").exists()
    finally:
        folder.chmod(0o755)



@pytest.mark.parametrize("total,world", [(10, 3), (4, 4), (3, 5), (0, 2), (101, 8)])
def test_rank_slices_partition_in_order(tmp_path, total, world):
    spans = [rank_slice(total, r, world) for r in range(world)]
    assert spans[0][0] == 0 and spans[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    sizes = [b - a for a, b in spans]
    assert sizes == [total // world + (1 if r < total % world else 0) for r in range(world)]


def test_slice_for_rank_reads_its_rows(tmp_path):
    rows = _rows(10, 2)
    r = TSVReader(_write(tmp_path / "h.tsv", ["\t".join(x) for x in rows]), use_cache=False)
    got = []
    for rank in range(3):
        s = r.slice_for_rank(rank, 3)
        got += [s[i] for i in range(len(s))]
        assert s.location(0) == f"{r.path}:{1 + rank_slice(10, rank, 3)[0]}"
    assert got == rows and [len(r.slice_for_rank(k, 3)) for k in range(3)] == [4, 3, 3]
    with pytest.raises(ValueError):
        r.slice_for_rank(3, 3)


class _RowsDataset(torch.utils.data.Dataset):
    def __init__(self, reader):
        self.reader = reader

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, i):
        return (os.getpid(), "|".join(self.reader[i]))


def test_dataloader_workers_reopen_file(tmp_path):
    rows = _rows(40, 3)
    r = TSVReader(_write(tmp_path / "i.tsv", ["\t".join(x) for x in rows]), use_cache=False)
    r[0]  # parent opens its handle first
    loader = torch.utils.data.DataLoader(_RowsDataset(r), batch_size=4, num_workers=2, collate_fn=list)
    out = [x for batch in loader for x in batch]
    assert [s for _, s in out] == ["|".join(x) for x in rows]
    assert len({pid for pid, _ in out}) == 2
    assert pickle.loads(pickle.dumps(r))[5] == rows[5]


def test_scan_lines_counts_columns(tmp_path):
    p = _write(tmp_path / "j.tsv", ["a\tb\tc", "", "d"], trailing=False)
    idx = scan_lines(p)
    assert idx.ncols.tolist() == [3, 0, 1] and idx.starts.tolist() == [0, 6, 7]
