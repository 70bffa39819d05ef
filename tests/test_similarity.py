"""Task similarity (π-Tuning notebook formula) and the ofa-task-similarity console script."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial import distance

from ofa_ext.cli.task_similarity import main
from ofa_ext.metrics.fisher import save_task_embedding
from ofa_ext.metrics.similarity import similarity_matrix, tensor_similarity, top_k


def test_hand_computation_on_tiny_vectors():
    a = {"t1": torch.tensor([1.0, 1.0]), "t2": torch.tensor([2.0])}
    b = {"t1": torch.tensor([1.0, 3.0]), "t2": torch.tensor([1.0])}
    # t1: den = [2, 4] → n_a = [1/2, 1/4], n_b = [1/2, 3/4]; t2: n_a = [2/3], n_b = [1/3] → cos 1
    cos1 = (0.25 + 0.1875) / math.sqrt((0.25 + 0.0625) * (0.25 + 0.5625))
    expected = (cos1 + 1.0) / 2  # mean over tensors, not the cosine of the concatenation
    m = similarity_matrix([a, b], decimals=None)
    assert m[0, 1] == pytest.approx(expected, abs=1e-6)
    assert similarity_matrix([a, b])[0, 1] == round(expected, 4)
    concat = tensor_similarity(torch.cat([a["t1"], a["t2"]]), torch.cat([b["t1"], b["t2"]]))
    assert abs(concat - expected) > 1e-3


def test_matches_scipy_cosine_of_normalised_vectors():
    g = torch.Generator().manual_seed(0)
    ea, eb = torch.rand(50, generator=g) ** 3, torch.rand(50, generator=g) ** 3
    a, b = ea.double().numpy(), eb.double().numpy()
    na, nb = a / (a + b + 1e-6), b / (a + b + 1e-6)
    assert tensor_similarity(ea, eb) == pytest.approx(1 - distance.cosine(na, nb), abs=1e-12)
    assert math.isnan(tensor_similarity(torch.zeros(3), torch.ones(3)))


def _embs(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"a.w": torch.rand(3, 4, generator=g) ** 2, "b.bias": torch.rand(5, generator=g)} for _ in range(n)]


def test_symmetric_unit_diagonal_rounded():
    m = similarity_matrix(_embs())
    assert np.array_equal(m, m.T)
    assert np.array_equal(np.diag(m), np.ones(4))
    assert np.array_equal(m, np.round(m, 4))
    assert ((m > 0) & (m <= 1)).all()


def test_nan_tensors_skipped_per_row_as_the_notebook():
    e = _embs(3)
    e[2]["b.bias"] = torch.zeros(5)  # task 2 never reached b.bias → NaN for pairs with task 2
    row = similarity_matrix(e, skip="row", decimals=None)
    pair = similarity_matrix(e, skip="pair", decimals=None)
    s_a = tensor_similarity(e[0]["a.w"], e[1]["a.w"])
    s_b = tensor_similarity(e[0]["b.bias"], e[1]["b.bias"])
    assert row[0, 1] == pytest.approx(s_a)  # row 0 drops b.bias for every pair (it fails with task 2)
    assert pair[0, 1] == pytest.approx((s_a + s_b) / 2)
    assert row[0, 2] == pair[0, 2] == pytest.approx(tensor_similarity(e[0]["a.w"], e[2]["a.w"]))
    bad = [{"x": torch.zeros(2)}, {"x": torch.zeros(2)}]
    with pytest.raises(ValueError, match="no parameter tensor gives a finite similarity"):
        similarity_matrix(bad, sources=["f0", "f1"])


def test_layout_mismatch_names_both_files():
    e = _embs(2)
    e[1]["a.w"] = torch.rand(4, 3)
    with pytest.raises(ValueError, match=r"one\.safetensors and two\.safetensors .*shapes differ"):
        similarity_matrix(e, sources=["one.safetensors", "two.safetensors"])


def test_top_k():
    names = ["a", "b", "c", "d"]
    m = np.array([[1, 0.5, 0.9, 0.7], [0.5, 1, 0.2, 0.1], [0.9, 0.2, 1, 0.3], [0.7, 0.1, 0.3, 1]])
    assert top_k(m, names, "a", 2) == [("c", 0.9), ("d", 0.7)]
    with pytest.raises(ValueError, match="expected 1..3"):
        top_k(m, names, "a", 4)
    with pytest.raises(ValueError, match="not among"):
        top_k(m, names, "z", 1)


def _write(tmp_path, embs, tasks):
    paths = []
    for e, t in zip(embs, tasks):
        paths.append(str(save_task_embedding(tmp_path / "emb" / f"{t}.safetensors", e,
                                             {"task": t, "expert": f"experts/{t}.safetensors"})))
    return paths


def test_cli_writes_every_file(tmp_path, capsys):
    tasks = ["refcoco", "refcocoplus", "refcocog"]
    paths = _write(tmp_path, _embs(3), tasks)
    out = tmp_path / "out"
    assert main(paths + ["--out", str(out), "--target", "refcocog", "--top-k", "2"]) == 0
    for f in ("task_sim.csv", "task_sim.md", "task_sim.png", "top_k_refcocog.json"):
        assert (out / f).stat().st_size > 0, f
    m = similarity_matrix(_embs(3))
    lines = (out / "task_sim.csv").read_text().splitlines()
    assert lines[0] == "refcoco,refcocoplus,refcocog"
    np.testing.assert_array_equal(np.array([[float(x) for x in l.split(",")] for l in lines[1:]]), m)
    assert "| refcocog |" in (out / "task_sim.md").read_text()
    rec = json.loads((out / "top_k_refcocog.json").read_text())
    order = sorted([0, 1], key=lambda j: -m[2, j])
    assert [r["task"] for r in rec["top_k"]] == [tasks[j] for j in order]
    assert rec["experts"][0] == "experts/refcocog.safetensors" and len(rec["experts"]) == 3
    assert rec["similarities"]["refcocog"] == 1.0
    printed = capsys.readouterr().out
    assert "top-2 tasks most similar to refcocog" in printed and "--interpolation-experts" in printed


def test_cli_errors(tmp_path):
    paths = _write(tmp_path, _embs(3), ["a", "b", "c"])
    with pytest.raises(SystemExit, match="top-k 3: expected 1..2"):
        main(paths + ["--out", str(tmp_path / "o"), "--target", "a", "--top-k", "3", "--no-plot"])
    other = save_task_embedding(tmp_path / "x" / "d.safetensors", {"a.w": torch.rand(2, 2), "b.bias": torch.rand(5)})
    with pytest.raises(SystemExit, match=r"a\.safetensors and .*d\.safetensors come from different piece layouts"):
        main([paths[0], str(other), "--out", str(tmp_path / "o"), "--no-plot"])
    with pytest.raises(SystemExit, match="duplicate task names"):
        main([paths[0], paths[0], "--out", str(tmp_path / "o"), "--no-plot"])
    with pytest.raises(SystemExit, match="not found"):
        main([str(tmp_path / "missing.safetensors")])
    assert main(paths + ["--names", "x,y,z", "--out", str(tmp_path / "o"), "--no-plot"]) == 0
    assert (tmp_path / "o" / "task_sim.csv").read_text().startswith("x,y,z")
