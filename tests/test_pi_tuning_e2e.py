"""π-Tuning steps 2 and 3 through the real command line on tiny generated data: ofa-task-embedding
(metadata, 1 process = 2 processes), fairseq-train with --interpolation-experts (weights logged,
checkpoint reloads for ofa-evaluate without the expert files), ofa-pieces collapse (= the
interpolation model through --petl-load), and the start-up errors."""

import json
import shutil
import sys

import pytest
import torch

from e2e_helpers import (TINY_MODEL_ARGS, USER_DIR, fairseq_train, load_for_eval, make_tiny_grounding_data, run,
                         valid_logits)

ADAPTER = {"adapter": True, "adapter_dim": 8}
METHODS = {
    "adapter": ADAPTER,
    "lora": {"lora": True, "lora_r": 4, "lora_targets": "q_proj,v_proj,fc1"},
    "prefix": {"encoder_prompt": True, "decoder_prompt": True, "encoder_prompt_length": 3, "decoder_prompt_length": 3},
    "bitfit": {"bitfit": True},
}


def make_expert(foundation, out, task_name, opts, seed):
    """A piece file: the foundation with PETL pieces moved off their initial values."""
    from ofa_ext.models.petl import save_pieces

    model, _ = load_for_eval(foundation, dict(opts))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    save_pieces(model, str(out), arch="ofa_nano", task=task_name)
    return str(out)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = make_tiny_grounding_data(tmp_path_factory.mktemp("data"))
    root = tmp_path_factory.mktemp("pi")
    fairseq_train(data, root / "foundation", ["--max-update", "2", "--disable-validation"], cwd=root)
    foundation = root / "foundation" / "checkpoint_last.pt"
    experts = [make_expert(foundation, root / f"t{k}.safetensors", f"t{k}", ADAPTER, 10 + k) for k in range(2)]
    return data, root, foundation, experts


def emb_args(data, foundation, expert, out, extra=()):
    return [str(data), "--user-dir", USER_DIR, "--spm-model", str(data / "spm.model"), *TINY_MODEL_ARGS,
            "--criterion", "adjust_label_smoothed_cross_entropy", "--batch-size", "8", "--num-workers", "0",
            "--seed", "3", "--finetune-from-model", str(foundation), "--freeze-resnet",
            "--petl-load", str(expert), "--task-emb-file-path", str(out), *extra]


def test_task_embedding_metadata_and_two_processes(setup, tmp_path):
    from ofa_ext.cli.task_embedding import main
    from ofa_ext.metrics.fisher import load_task_embedding
    from ofa_ext.models.petl import read_piece_file

    data, root, foundation, experts = setup
    one = tmp_path / "one" / "t0.safetensors"
    assert main(emb_args(data, foundation, experts[0], one, ["--cpu"])) == 0
    fisher, meta = load_task_embedding(one)
    pieces, _ = read_piece_file(experts[0])
    assert set(fisher) == set(pieces) and all(fisher[k].shape == pieces[k].shape for k in pieces)
    assert meta["task"] == "t0" and meta["expert"].endswith("t0.safetensors") and meta["split"] == "train"
    assert meta["estimator"] == "pi_tuning" and meta["mode"] == "eval" and meta["world_size"] == 1
    assert meta["n_samples"] == 32 and meta["n_batches"] == 4 and meta["divisor"] == 32.0
    assert json.loads(one.with_suffix(".json").read_text())["task"] == "t0"
    assert sum(float(t.sum()) for t in fisher.values()) > 0

    two = tmp_path / "two"  # a folder: π-Tuning's results/{task} layout
    proc = run([sys.executable, "-m", "ofa_ext.cli.launch", "--nproc", "2", "--entry", "task_emb", "--",
                *emb_args(data, foundation, experts[0], two)], cwd=tmp_path)
    assert "rank 1 of 2" in proc.stdout + proc.stderr
    fisher2, meta2 = load_task_embedding(two / "task_emb.safetensors")
    assert meta2["world_size"] == 2 and meta2["n_samples"] == 32 and meta2["n_batches"] == 4
    for k in fisher:  # each rank saw half of the batches; their sums add up to the single-process pass
        torch.testing.assert_close(fisher2[k], fisher[k], rtol=1e-4, atol=1e-12)


def test_several_experts_in_one_process_equal_their_own_runs(setup, tmp_path):
    from ofa_ext.cli.task_embedding import main
    from ofa_ext.metrics.fisher import load_task_embedding

    data, root, foundation, experts = setup
    alone = [tmp_path / "alone" / f"t{k}.safetensors" for k in range(2)]
    for expert, out in zip(experts, alone):
        assert main(emb_args(data, foundation, expert, out, ["--cpu"])) == 0
    together = [tmp_path / "together" / f"t{k}.safetensors" for k in range(2)]
    assert main(emb_args(data, foundation, experts[0], together[0],
                         ["--cpu", "--task-emb-also", str(data), experts[1], str(together[1]), "renamed"])) == 0
    for k, (a, b) in enumerate(zip(alone, together)):
        fa, ma = load_task_embedding(a)
        fb, mb = load_task_embedding(b)
        assert set(fa) == set(fb) and all(torch.equal(fa[n], fb[n]) for n in fa)
        assert mb["expert"] == ma["expert"] and mb["n_samples"] == ma["n_samples"]
        assert mb["task"] == ("t0" if k == 0 else "renamed")  # '' would keep the expert file's name
    # the two experts differ, so their embeddings must too: the second run really used its own expert
    assert not torch.equal(*(next(iter(load_task_embedding(p)[0].values())) for p in together))


@pytest.mark.parametrize("also,message", [
    (["{data}", "missing.safetensors", "o.safetensors", ""], "missing.safetensors does not exist"),
    (["{data}/nowhere", "{expert}", "o.safetensors", ""], "nowhere does not exist"),
    (["{data}", "{expert}", "{out}", ""], "two embeddings would be written to the same file"),
])
def test_task_emb_also_is_checked_before_the_first_pass(setup, tmp_path, capsys, also, message):
    from ofa_ext.cli.task_embedding import main

    data, root, foundation, experts = setup
    out = tmp_path / "first.safetensors"
    also = [a.format(data=data, expert=experts[1], out=out) for a in also]
    with pytest.raises(SystemExit):
        main(emb_args(data, foundation, experts[0], out, ["--cpu", "--task-emb-also", *also]))
    assert message in capsys.readouterr().err and not out.exists()


def test_interpolation_run_logs_weights_reloads_and_collapses(setup, tmp_path):
    from ofa_ext.cli.evaluate import main as evaluate
    from ofa_ext.cli.pieces import main as pieces

    data, root, foundation, experts = setup
    local = [shutil.copy(e, tmp_path / f"e{k}.safetensors") for k, e in enumerate(experts)]
    save = tmp_path / "ckpt"
    proc = fairseq_train(data, save, ["--finetune-from-model", str(foundation), "--freeze-resnet", "--max-update", "2",
                                      "--disable-validation", "--adapter", "--adapter-dim", "8", "--lr", "0.05",
                                      "--interpolation-experts", ",".join(map(str, local)),
                                      "--interpolation-init", "similarity", "--interpolation-similarities", "0.9,0.3"],
                         cwd=tmp_path)
    log = proc.stdout + proc.stderr
    assert "expert interpolation: 2 experts ['t0', 't1']" in log and "initial weights [0.75, 0.25]" in log
    assert "mix_w0=" in log and "mix_w1=" in log
    ckpt = save / "checkpoint_last.pt"

    for p in local:  # the evaluation machine has no expert files
        p.unlink()
    interp, task = load_for_eval(ckpt)
    assert interp.absent_experts and hasattr(interp, "expert_mix")
    w = interp.expert_mix.weights().detach()[0]
    assert abs(float(w[0]) - 0.75) > 1e-4  # the weights trained
    assert evaluate([str(data), "--path", str(ckpt), "--gen-subset", "test", "--results-path", str(tmp_path / "ev"),
                     "--cpu", "--beam", "2"]) == 0
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["n"] == 16

    out = tmp_path / "collapsed.safetensors"
    assert pieces(["collapse", str(ckpt), str(out), "--task-name", "target"]) == 0
    from ofa_ext.models.petl import read_piece_file

    tensors, meta = read_piece_file(str(out))
    assert meta["methods"] == ["adapter"] and meta["task"] == "target"
    assert meta["extra"]["mix_weights"] == pytest.approx(w.tolist(), abs=1e-6)
    reloaded, _ = load_for_eval(foundation, {"petl_load": str(out)})
    assert torch.equal(valid_logits(reloaded, task), valid_logits(interp, task))
    with pytest.raises(SystemExit, match="collapse"):
        pieces(["export", str(ckpt), str(tmp_path / "x.safetensors")])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_builds_from_the_backbone_and_collapses(setup, tmp_path, method):
    """The fairseq build path (model ofa + --interpolation-experts, then the backbone checkpoint
    loaded strictly) for each piece type; collapse = the mixed model through --petl-load."""
    from ofa_ext.models.interpolation import unload_interpolation
    from ofa_ext.models.petl import save_pieces

    data, root, foundation, _ = setup
    opts = METHODS[method]
    paths = [make_expert(foundation, tmp_path / f"{method}{k}.safetensors", f"{method}{k}", opts, k) for k in range(2)]
    model, task = load_for_eval(foundation, {**opts, "interpolation_experts": ",".join(paths), "interpolation_init": "logits",
                                    "interpolation_logits": "0.3,-0.2", "interpolation_granularity": "slot"})
    mixed = valid_logits(model, task)
    unload_interpolation(model)
    save_pieces(model, str(tmp_path / "c.safetensors"), arch="ofa_nano")
    reloaded, _ = load_for_eval(foundation, {"petl_load": str(tmp_path / "c.safetensors")})
    assert torch.equal(valid_logits(reloaded, task), mixed)
    single, _ = load_for_eval(foundation, {"petl_load": paths[0]})
    assert not torch.equal(valid_logits(single, task), mixed)


def test_start_up_errors(setup, tmp_path):
    from ofa_ext.cli.task_embedding import main as embed

    data, root, foundation, experts = setup
    lora = make_expert(foundation, tmp_path / "lora.safetensors", "l", METHODS["lora"], 0)
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", USER_DIR, "--spm-model",
           str(data / "spm.model"), "--save-dir", str(tmp_path / "x"), "--cpu", *TINY_MODEL_ARGS,
           "--criterion", "adjust_label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3",
           "--batch-size", "8", "--max-update", "1", "--adapter", "--adapter-dim", "8",
           "--interpolation-experts", f"{experts[0]},{lora}"]
    with pytest.raises(AssertionError, match=r"different PETL setups"):
        run(cmd, cwd=tmp_path)

    def build(**over):
        return load_for_eval(foundation, {**ADAPTER, **over})

    with pytest.raises(ValueError, match=r"top-k=3 is larger than the number of experts \(2"):
        build(interpolation_experts=",".join(experts), interpolation_top_k=3, interpolation_similarities="1,0.5")
    with pytest.raises(ValueError, match="needs the experts' PETL options.*--adapter --adapter-dim 8"):
        load_for_eval(foundation, {"interpolation_experts": ",".join(experts)})
    with pytest.raises(ValueError, match="adapter_dim: experts 8 vs command line 4"):
        build(adapter_dim=4, interpolation_experts=",".join(experts))
    with pytest.raises(ValueError, match="exclude each other"):
        build(petl_load=experts[0], interpolation_experts=",".join(experts))

    empty = tmp_path / "empty"
    empty.mkdir()
    for split in ("valid", "test"):
        shutil.copy(data / f"{split}.tsv", empty)
    (empty / "train.tsv").write_text("")
    shutil.copy(data / "spm.model", empty)
    with pytest.raises(SystemExit, match="has no rows"):
        embed(emb_args(empty, foundation, experts[0], tmp_path / "z.safetensors", ["--cpu"]))
    with pytest.raises(SystemExit, match="made for another PETL setup"):
        embed(emb_args(data, foundation, experts[0], tmp_path / "z.safetensors", ["--cpu", "--lora"]))
    args = emb_args(data, foundation, experts[0], "x", ["--cpu"])
    with pytest.raises(SystemExit):  # no output path: argparse error (exit code 2) before any work
        embed(args[:-3] + args[-1:])
