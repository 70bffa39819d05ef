"""run_scripts/demo/fisher_anatomy.py on generated task embeddings: masses, shares and similarities."""

import importlib.util
from pathlib import Path

import torch

from ofa_ext.metrics.fisher import save_task_embedding

SCRIPT = Path(__file__).resolve().parents[1] / "run_scripts" / "demo" / "fisher_anatomy.py"


def test_fisher_anatomy_table(tmp_path):
    spec = importlib.util.spec_from_file_location("fisher_anatomy", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    g = torch.Generator().manual_seed(0)
    folder = tmp_path / "s1" / "task_emb"
    folder.mkdir(parents=True)
    for task, scale in (("a", 1.0), ("b", 10.0), ("t", 2.0)):
        save_task_embedding(folder / f"{task}.safetensors",
                            {"encoder.x": torch.rand(5, generator=g) * scale, "decoder.y": torch.full((3,), 3 * scale)})
    mod.main(str(tmp_path), "t", "a,b")
    rows = [r.split(" | ") for r in (tmp_path / "fisher_anatomy.md").read_text().splitlines() if r.startswith("| s1")]
    assert [r[1] for r in rows] == ["a", "b", "t"]
    t = rows[2]
    assert t[4] == "1.000" and t[5].startswith("1.000")  # the target against itself
    b = rows[1]
    # decoder tensors of b are a constant multiple of the target's: the symmetric cosine is 1
    assert b[5].startswith("1.000")
    from safetensors.torch import load_file

    saved = load_file(str(folder / "b.safetensors"))
    mass = float(saved["encoder.x"].sum() + saved["decoder.y"].sum())
    assert abs(float(b[2]) - mass) <= 1e-2 * mass  # 3 significant digits
    assert abs(float(b[3]) - float(saved["encoder.x"].sum()) / mass) <= 0.01
