"""ofa-transferability end to end on small prompt files, and its one-line errors."""

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ofa_ext.cli import transferability as cli
from ofa_ext.metrics.rank_correlation import kendall_tau_a
from ofa_ext.metrics.transferability import modality_gap, modality_gaps


def test_modality_gap_orders_by_distribution_shift():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(300, 8, generator=g)
    near, far = torch.randn(20, 8, generator=g), torch.randn(20, 8, generator=g) + 2.0
    assert modality_gap(near, tokens) < modality_gap(far, tokens)
    with pytest.raises(ValueError, match="prompt width 8 differs from target token width 5"):
        modality_gap(near, torch.zeros(10, 5))
    # the batched form (target distances computed once) equals one mmd() per prompt
    from ofa_ext.metrics.distances import mmd

    many = modality_gaps([near, far, tokens[:7]], tokens)
    np.testing.assert_allclose(many, [float(mmd(p, tokens)) for p in (near, far, tokens[:7])], rtol=1e-5)
    np.testing.assert_allclose(modality_gaps([near], tokens, bandwidth=3.0), [float(mmd(near, tokens, bandwidth=3.0))],
                               rtol=1e-5)


def _write_case(tmp_path, n_sources=4, missing=None):
    g = torch.Generator().manual_seed(1)
    target = torch.randn(6, 8, generator=g)
    save_file({"prompt": target}, str(tmp_path / "target.safetensors"))
    save_file({"tokens": torch.randn(50, 8, generator=g)}, str(tmp_path / "tokens.safetensors"))
    paths, rows = [], []
    for i in range(n_sources):
        p = tmp_path / f"src{i}.safetensors"
        save_file({"prompt": target + 0.3 * i * torch.randn(6, 8, generator=g)}, str(p))
        paths.append(str(p))
        if f"src{i}" != missing:
            rows.append((f"src{i}", 0.9 - 0.1 * i))
    with open(tmp_path / "gt.csv", "w", newline="") as f:
        csv.writer(f).writerows([("source", "accuracy")] + rows)
    return paths


def test_cli_writes_scores_and_correlations(tmp_path, capsys):
    paths = _write_case(tmp_path)
    out = tmp_path / "out"
    rc = cli.main(paths + ["--target-prompt", str(tmp_path / "target.safetensors"),
                           "--target-tokens", str(tmp_path / "tokens.safetensors"),
                           "--ground-truth", str(tmp_path / "gt.csv"), "--out", str(out),
                           "--projector-steps", "5", "--projector-seeds", "1,2", "--task-gap-metric", "euclidean_average"])
    assert rc == 0
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["source"] for r in rows] == ["src0", "src1", "src2", "src3"]
    summary = json.loads((out / "summary.json").read_text())
    gt = [float(r["accuracy"]) for r in rows]
    for est in ("avg_cosine", "modality_gap", "task_gap", "combined"):
        pred = [float(r[est]) for r in rows]
        assert summary["correlations"][est]["kendall_tau"] == pytest.approx(100 * kendall_tau_a(gt, pred))
    # the source that equals the target is the most similar by average cosine
    assert int(np.argmax([float(r["avg_cosine"]) for r in rows])) == 0
    assert (out / "scatter.png").stat().st_size > 0 and (out / "correlations.md").exists()


@pytest.mark.parametrize("case,needle", [
    (dict(missing="src2"), "no ground truth for source(s) src2"),
    (dict(n_sources=2), "at least 3 sources"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, case, needle):
    paths = _write_case(tmp_path, **case)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(paths + ["--target-prompt", str(tmp_path / "target.safetensors"), "--estimators", "avg_cosine",
                          "--ground-truth", str(tmp_path / "gt.csv"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and needle in err and len(err.splitlines()) == 1


def test_cli_bad_prompt_file(tmp_path, capsys):
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    paths = _write_case(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(tmp_path / "bad.safetensors")] + paths +
                 ["--target-prompt", str(tmp_path / "target.safetensors"), "--estimators", "avg_cosine",
                  "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "bad.safetensors: not a safetensors file" in err and len(err.splitlines()) == 1
