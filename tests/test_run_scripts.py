"""Every script under run_scripts/refcoco runs, at toy size, through the variables at its top.

One chain, as a user would run it: a foundation from scratch (train_refcoco.sh), an expert per PETL
method on it (train_refcoco_{adapter,lora,prefix,bitfit}.sh), a task embedding
(refcoco_task_emb.sh), an interpolation per method (train_refcoco_*_interpolation.sh, which also
collapse), and evaluation (evaluate_refcoco.sh). The scripts' own defaults are the official recipe;
`test_recipe_defaults` reads them back. launch.sh runs in test_two_process.py; the demo stages
(run_scripts/demo) run in test_demo_quick.py.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_helpers import REPO, load_for_eval, make_tiny_grounding_data

SCRIPTS = REPO / "run_scripts" / "refcoco"


def toy_env(data: Path, save: Path, **more) -> dict:
    """The variables that shrink a run script to a few updates of ofa_nano on the CPU."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               DATA=str(data), SPM_MODEL=str(data / "spm.model"), CODE_DICT_SIZE="0", NUM_BINS="100",
               PATCH_IMAGE_SIZE="64", MAX_IMAGE_SIZE="64", ARCH="ofa_nano", GPU="0", NPROC="1",
               MAX_UPDATE="2", TOTAL_BATCH="8", BATCH_SIZE="8", SAVE_INTERVAL_UPDATES="2", LOG_INTERVAL="1",
               EVAL_ARGS='{"beam":2,"min_len":4,"max_len_a":0,"max_len_b":4}', TENSORBOARD="",
               SAVE_DIR=str(save))
    env.update({k: str(v) for k, v in more.items()})
    return env


def second_expert(foundation: Path, expert: Path, out: Path) -> Path:
    """Another expert of the same method: ``expert``'s pieces moved by a fixed random step."""
    import torch

    from ofa_ext.models.petl import save_pieces

    model, _ = load_for_eval(foundation, {"petl_load": str(expert)})
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    save_pieces(model, str(out), arch="ofa_nano", task="toy_other")
    return out


def run_script(name: str, env: dict, cwd: Path) -> str:
    proc = subprocess.run(["bash", str(SCRIPTS / name)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{log[-5000:]}"
    return log


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """data, root and the outputs of the foundation and the four PETL scripts."""
    root = tmp_path_factory.mktemp("scripts")
    data = make_tiny_grounding_data(root / "data")
    # the scripts find the plugin as `--user-dir ofa_ext`, relative to the repository root
    cwd = REPO
    log = run_script("train_refcoco.sh", toy_env(data, root / "full", RESTORE=""), cwd)
    foundation = root / "full" / "checkpoint_best.pt"
    assert foundation.is_file() and "num_updates 2" in log.replace("=", " "), log[-3000:]
    small = {"ADAPTER_DIM": 8, "LORA_R": 4, "PROMPT_LENGTH": 4}
    experts = {}
    for method in ("adapter", "lora", "prefix", "bitfit"):
        save = root / method
        run_script(f"train_refcoco_{method}.sh", toy_env(data, save, RESTORE=foundation, TASK_NAME=f"toy_{method}",
                                                           **small), cwd)
        experts[method] = save / "pieces.safetensors"
        assert experts[method].is_file()
    return data, root, cwd, foundation, experts


def test_queued_runs_in_one_process_equal_their_own_processes(chain, tmp_path):
    """QUEUE=FILE + `ofa-launch --commands FILE`: the foundation run (from scratch, dropout on) and two
    PETL runs in one process give the checkpoints and pieces that their own processes gave."""
    import torch

    from ofa_ext.models.petl import read_piece_file

    data, root, cwd, foundation, experts = chain
    queue = tmp_path / "queue"
    small = {"ADAPTER_DIM": 8, "LORA_R": 4}
    log = run_script("train_refcoco.sh", toy_env(data, tmp_path / "full", RESTORE="", QUEUE=queue), cwd)
    assert "queued" in log and not (tmp_path / "full" / "checkpoint_best.pt").exists()
    for method in ("adapter", "lora"):
        run_script(f"train_refcoco_{method}.sh", toy_env(data, tmp_path / method, RESTORE=foundation, QUEUE=queue,
                                                         TASK_NAME=f"toy_{method}", **small), cwd)
    assert len(queue.read_text().splitlines()) == 3
    proc = subprocess.run(["ofa-launch", "--commands", str(queue)], cwd=cwd, env=toy_env(data, tmp_path / "unused"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "run 3 of 3" in proc.stdout
    ours = torch.load(tmp_path / "full" / "checkpoint_best.pt", map_location="cpu", weights_only=False)["model"]
    theirs = torch.load(foundation, map_location="cpu", weights_only=False)["model"]
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    for method in ("adapter", "lora"):
        got, _ = read_piece_file(str(tmp_path / method / "pieces.safetensors"))
        want, _ = read_piece_file(str(experts[method]))
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in got), method


def test_readme_queue_example_runs(chain, tmp_path):
    """README's QUEUE / `ofa-launch --commands` lines, as written, with the toy variables around them."""
    from test_readme_commands import code_blocks

    data, root, cwd, foundation, experts = chain
    block = next(b for b in code_blocks("Several processes or GPUs") if any("--commands" in line for line in b))
    env = toy_env(data, tmp_path / "unused", RESTORE=foundation, ADAPTER_DIM=8, LORA_R=4, W=tmp_path)
    proc = subprocess.run(["bash", "-euc", "\n".join(block)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "run 2 of 2" in proc.stdout
    assert (tmp_path / "adapter" / "pieces.safetensors").is_file() and (tmp_path / "lora" / "pieces.safetensors").is_file()


def test_petl_scripts_export_pieces(chain):
    from ofa_ext.models.petl import read_piece_file

    _, _, _, _, experts = chain
    methods = {m: read_piece_file(str(p), tensors=False)[1]["methods"] for m, p in experts.items()}
    assert methods == {"adapter": ["adapter"], "lora": ["lora"], "prefix": ["prefix"], "bitfit": ["bitfit"]}, methods


@pytest.mark.parametrize("method", ["adapter", "lora", "prefix"])
def test_interpolation_scripts_train_and_collapse(chain, method):
    """The options are read from the first expert (no PETL_FLAGS), then the mix is collapsed."""
    from ofa_ext.models.petl import read_piece_file

    data, root, cwd, foundation, experts = chain
    save = root / f"{method}_interpolation"
    expert = str(experts[method])
    other = second_expert(foundation, experts[method], root / f"{method}_other.safetensors")
    log = run_script(f"train_refcoco_{method}_interpolation.sh",
                     toy_env(data, save, RESTORE=foundation, EXPERTS=f"{expert},{other}"), cwd)
    assert "mix_w0" in log, log[-3000:]
    _, meta = read_piece_file(str(save / "pieces.safetensors"), tensors=False)
    assert meta["methods"] == read_piece_file(expert, tensors=False)[1]["methods"]


def test_task_embedding_script(chain):
    import torch

    from ofa_ext.metrics.fisher import load_task_embedding

    data, root, cwd, foundation, experts = chain
    out = root / "emb" / "toy.safetensors"
    env = toy_env(data, root / "unused", BACKBONE=foundation, EXPERT=experts["adapter"], OUT=out, TASK_NAME="toy",
                  FILE_ORDER=1)
    run_script("refcoco_task_emb.sh", env, cwd)
    fisher, meta = load_task_embedding(out)
    assert meta["task"] == "toy" and meta["mode"] == "train" and meta["seed"] == 7 and meta["n_samples"] == 32
    assert sum(float(t.sum()) for t in fisher.values()) > 0

    # lists: both experts in one process; the first file equals the single run's (same seed, same pass)
    other = second_expert(foundation, experts["adapter"], root / "emb_other.safetensors")
    outs = [root / "emb" / "list_a.safetensors", root / "emb" / "list_b.safetensors"]
    env.update(DATA=f"{data} {data}", EXPERT=f"{experts['adapter']} {other}", OUT=" ".join(map(str, outs)),
               TASK_NAME="toy other")
    log = run_script("refcoco_task_emb.sh", env, cwd)
    assert log.count("task embedding ") >= 2 and "-> " + str(outs[1]) in log
    first, _ = load_task_embedding(outs[0])
    assert all(torch.equal(first[k], fisher[k]) for k in fisher)
    assert load_task_embedding(outs[1])[1]["task"] == "other"
    env["OUT"] = str(outs[0])
    proc = subprocess.run(["bash", str(SCRIPTS / "refcoco_task_emb.sh")], cwd=cwd, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "must list as many entries each" in proc.stderr, proc.stderr[-2000:]


def test_evaluate_script(chain):
    data, root, cwd, foundation, experts = chain
    results = root / "eval"
    env = toy_env(data, root / "unused", CHECKPOINT=foundation, PETL_LOAD=experts["adapter"], RESULTS=results,
                  BATCH_SIZE=8, BEAM=2)
    run_script("evaluate_refcoco.sh", env, cwd)
    summary = json.loads((results / "summary.json").read_text())
    assert summary["n"] == 16 and 0.0 <= summary["acc@0.5"] <= 1.0


def _defaults(script: str) -> dict:
    """VAR -> default of the `: "${VAR:=default}"` lines of a script (and of what it sources)."""
    text = (SCRIPTS / script).read_text()
    if "pi_tuning_recipe.sh" in text:
        text += (SCRIPTS / "pi_tuning_recipe.sh").read_text()
    found = {}
    for k, v in re.findall(r'"\$\{(\w+):?=([^}"]*)\}"', text):
        found.setdefault(k, v)  # the first assignment wins, as in bash's ${VAR:=default}
    return found


# value, source: specs/pi_tuning.md §4, §5.1, §6.3 and specs/refcoco.md §9 (the README's recipe table)
RECIPES = {
    "train_refcoco_adapter.sh": dict(LR="1e-4", MAX_EPOCH="100", TOTAL_BATCH="1024", BATCH_SIZE="8",
                                     PATCH_IMAGE_SIZE="480", SEED="7", ADAPTER_DIM="128", DROP_PATH="0.2"),
    "train_refcoco_lora.sh": dict(LR="1e-4", MAX_EPOCH="100", TOTAL_BATCH="1024", BATCH_SIZE="16",
                                  PATCH_IMAGE_SIZE="480", SEED="1", LORA_R="16", LORA_ALPHA="1"),
    "train_refcoco_prefix.sh": dict(LR="1e-4", MAX_EPOCH="100", TOTAL_BATCH="1024", BATCH_SIZE="16",
                                    PATCH_IMAGE_SIZE="480", SEED="1", PROMPT_LENGTH="100", PROMPT_DROPOUT="0.2"),
    "train_refcoco_bitfit.sh": dict(LR="1e-4", MAX_EPOCH="100", TOTAL_BATCH="1024", BATCH_SIZE="16",
                                    PATCH_IMAGE_SIZE="480", SEED="1"),
    "train_refcoco_interpolation.sh": dict(LR="1e-4", MAX_EPOCH="5", TOTAL_BATCH="1024", BATCH_SIZE="8",
                                           PATCH_IMAGE_SIZE="480", SEED="7"),
    "refcoco_task_emb.sh": dict(BATCH_SIZE="4", PATCH_IMAGE_SIZE="480", SEED="7", MODE="train",
                                ESTIMATOR="pi_tuning", DROP_PATH="0.2"),
    "train_refcoco.sh": dict(LR="3e-5", MAX_EPOCH="10", TOTAL_BATCH="128", BATCH_SIZE="4", PATCH_IMAGE_SIZE="512",
                             SEED="1", DROP_PATH="0.2", FILE_ORDER="0", FREEZE_RESNET="0"),
}


@pytest.mark.parametrize("script", sorted(RECIPES))
def test_recipe_defaults(script):
    defaults = _defaults(script)
    assert {k: defaults.get(k) for k in RECIPES[script]} == RECIPES[script]


def test_total_batch_must_factor(tmp_path):
    env = toy_env(tmp_path, tmp_path / "save", TOTAL_BATCH="10", BATCH_SIZE="4", UPDATE_FREQ="2")
    proc = subprocess.run(["bash", str(SCRIPTS / "train_refcoco.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "is not TOTAL_BATCH=10" in proc.stderr
