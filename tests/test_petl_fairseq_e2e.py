"""PETL through the real command line: fairseq-train per method from a "foundation" checkpoint,
piece export, and reloading the pieces onto a fresh backbone with --petl-load."""

import json
import sys

import pytest
import torch

from e2e_helpers import fairseq_train, load_for_eval, make_tiny_grounding_data, run, valid_logits

METHODS = {
    "adapter": ["--adapter", "--adapter-dim", "8"],
    "prefix": ["--encoder-prompt", "--decoder-prompt", "--encoder-prompt-length", "4", "--decoder-prompt-length", "4"],
    "lora": ["--lora", "--lora-r", "4", "--lora-targets", "q_proj,v_proj,fc1"],
    "bitfit": ["--bitfit"],
}


@pytest.fixture(scope="module")
def foundation(tmp_path_factory):
    data = make_tiny_grounding_data(tmp_path_factory.mktemp("data"))
    save = tmp_path_factory.mktemp("foundation")
    fairseq_train(data, save, ["--max-update", "2", "--disable-validation"], cwd=save)
    return data, save / "checkpoint_last.pt"


def train_method(data, foundation_ckpt, save, flags, extra=()):
    return fairseq_train(data, save, ["--finetune-from-model", str(foundation_ckpt), "--freeze-resnet",
                                      "--max-update", "2", "--disable-validation", *flags, *extra], cwd=save.parent)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_exports_and_reloads(method, foundation, tmp_path):
    data, base = foundation
    save = tmp_path / "ckpt"
    log = train_method(data, base, save, METHODS[method])
    assert "trainable" in (log.stdout + log.stderr).lower()
    pieces = tmp_path / f"{method}.safetensors"
    proc = run([sys.executable, "-m", "ofa_ext.cli.pieces", "export", str(save / "checkpoint_last.pt"), str(pieces)],
               cwd=tmp_path)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    tuned, task = load_for_eval(save / "checkpoint_last.pt")
    total = sum(p.numel() for p in tuned.parameters())
    assert 0 < info["params"] < 0.05 * total, info

    # a fresh backbone (the foundation) + --petl-load gives the tuned model's outputs
    reloaded, _ = load_for_eval(base, {"petl_load": str(pieces)})
    assert torch.equal(valid_logits(reloaded, task), valid_logits(tuned, task))
