"""Task ``orca`` + criterion ``orca_align``: ORCA's lr rules, real fairseq-train runs on GunPoint
with MiniLM (align lowers the OTDD and trains only the embedder; 2 processes = 1 process; refine
from an align checkpoint; the run script at toy size) and the bad-input errors."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from e2e_helpers import REPO, USER_DIR, run
from test_crossmodal_e2e import json_logs

warnings.filterwarnings("ignore", category=FutureWarning)

E = 3  # align updates in the runs below
BASE = ["--task", "orca", "--arch", "crossmodal_model", "--body", "minilm", "--target-seq-len", "10",
        "--body-dropout", "0", "--criterion", "orca_align", "--loss", "ce", "--optimizer", "adam",
        "--lr", "1e-4", "--lr-scheduler", "fixed", "--batch-size", "8", "--num-workers", "0",
        "--log-format", "json", "--log-interval", "1", "--seed", "7", "--no-epoch-checkpoints",
        "--no-save-optimizer-state", "--best-checkpoint-metric", "accuracy",
        "--maximize-best-checkpoint-metric", "--orca-maxsamples", "16"]


def test_orca_learning_rate_rules():
    from ofa_ext.tasks.orca import orca_learning_rate as lr

    assert lr(1e-4, 0, 60) == pytest.approx(1e-3)            # x10 when lr <= 1e-3
    assert lr(1e-2, 0, 60) == pytest.approx(1e-2)            # unchanged above
    assert lr(1e-4, 19, 60) == pytest.approx(1e-3)
    assert lr(1e-4, 20, 60) == pytest.approx(2e-4)           # StepLR x0.2 at 20, 40
    assert lr(1e-4, 45, 60) == pytest.approx(4e-5)
    assert lr(1e-4, 60, 60, warmup=10, decay=110) == 0.0     # refine warm-up starts at 0 (WarmupLR)
    assert lr(1e-4, 65, 60, warmup=10, decay=110) == pytest.approx(5e-5)
    assert lr(1e-4, 70, 60, warmup=10, decay=110) == pytest.approx(1e-4)
    assert lr(1e-4, 120, 60, warmup=10, decay=110) == pytest.approx(1e-4 * 50 / 100)
    assert lr(1e-4, 3, 0) == pytest.approx(1e-4)             # refine only, no schedule


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ofa_ext.cli.source_features import main as source_features
    from ofa_ext.data.arrays_writer import write_array_dataset

    root = tmp_path_factory.mktemp("orca")
    write_array_dataset("gunpoint", root / "gunpoint", seed=1)
    src = root / "lee.safetensors"
    assert source_features(["--corpus", "lee", "--max-rows", "200", "--max-tokens", "16", "--kmeans-k", "4",
                            "--out", str(src)]) == 0
    return root, src


def _train(data, save: Path, nproc: int, extra):
    root, src = data
    cmd = ["python", "-m", "ofa_ext.cli.launch", "--nproc", str(nproc), "--", str(root / "gunpoint"),
           "--user-dir", USER_DIR, "--save-dir", str(save), *BASE, "--orca-source-features", str(src), *extra]
    proc = run(cmd, cwd=root, timeout=900)
    return proc.stdout + proc.stderr


def _model_state(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    return {k: v.float() for k, v in state.items()}


@pytest.fixture(scope="module")
def align_runs(data):
    root, _ = data
    args = ["--orca-stage", "align", "--orca-embedder-epochs", str(E), "--max-update", str(E)]
    one = _train(data, root / "align1", 1, args)
    two = _train(data, root / "align2", 2, args)
    return one, two


def _align_losses(log: str) -> list:
    return [float(r["align_loss"]) for r in json_logs(log, "train_inner") if r.get("align_loss") not in (None, "None")]


@pytest.mark.timeout(1800)
def test_align_lowers_the_distance_and_trains_only_the_embedder(data, align_runs):
    root, _ = data
    losses = _align_losses(align_runs[0])
    assert len(losses) == E, align_runs[0][-3000:]
    assert losses[-1] < losses[0], losses
    logs = [r for r in json_logs(align_runs[0], "train_inner")]
    assert all("align_d0" in r and "align_d1" in r for r in logs)       # per-class distances logged
    assert float(logs[0]["orca_lr"]) == pytest.approx(1e-3)             # lr x10 in align
    after = _model_state(root / "align1" / "checkpoint_last.pt")
    from ofa_ext.api import load_body

    body = load_body("minilm").state_dict()
    for k, v in body.items():  # the body is untouched by alignment
        torch.testing.assert_close(after[f"body.{k}"], v.float(), msg=k)


@pytest.mark.timeout(1800)
def test_two_process_alignment_equals_one_process(data, align_runs):
    root, _ = data
    one, two = (_align_losses(log) for log in align_runs)
    assert len(two) == E
    np.testing.assert_allclose(two, one, rtol=1e-5)
    a = _model_state(root / "align1" / "checkpoint_last.pt")
    b = _model_state(root / "align2" / "checkpoint_last.pt")
    for k in a:
        if k.startswith("embedder."):
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.timeout(1800)
def test_refine_continues_from_the_align_checkpoint(data, align_runs):
    """--orca-stage refine --finetune-from-model ALIGN.pt starts from the aligned embedder: with a
    vanishing lr the refined embedder is the aligned one."""
    root, _ = data
    ckpt = root / "align1" / "checkpoint_last.pt"
    log = _train(data, root / "refine", 1, ["--orca-stage", "refine", "--max-update", "2", "--lr", "1e-12",
                                             "--finetune-from-model", str(ckpt)])
    records = json_logs(log, "train_inner")
    assert len(records) == 2 and all(np.isfinite(float(r["loss"])) for r in records)
    assert all(r.get("align_loss") in (None, "None") for r in records)  # no align update in refine
    aligned, refined = _model_state(ckpt), _model_state(root / "refine" / "checkpoint_last.pt")
    for k in aligned:
        if k.startswith("embedder."):
            torch.testing.assert_close(refined[k], aligned[k], rtol=0, atol=1e-6, msg=k)


def test_run_script_at_toy_size(data, tmp_path):
    root, src = data
    env_extra = {"DATA": str(root / "gunpoint"), "SOURCE": str(src), "EMBEDDER_EPOCHS": "2",
                 "EPOCHS": "1", "MAXSAMPLES": "16", "SAVE_DIR": str(tmp_path / "ck"), "PATH": os.environ["PATH"]}
    cmd = ["env", *[f"{k}={v}" for k, v in env_extra.items()], "bash", str(REPO / "run_scripts/orca/gunpoint.sh")]
    proc = run(cmd, cwd=tmp_path, timeout=900)
    log = proc.stdout + proc.stderr
    assert "align_loss" in log and (tmp_path / "ck" / "checkpoint_last.pt").is_file(), log[-3000:]
    assert f"from {root / 'gunpoint' / 'train.npz'}" in log  # the script trained on the DATA it was given


# ------------------------------------------------------------------------------------ bad input
def _task(data, **overrides):
    from ofa_ext.tasks.orca import OrcaConfig, OrcaTask

    root, src = data
    cfg = OrcaConfig(data=str(overrides.pop("folder", root / "gunpoint")),
                     orca_source_features=str(overrides.pop("source", src)), **overrides)
    return OrcaTask.setup_task(cfg)


def _model(task):
    from ofa_ext.models.crossmodal.model import CrossmodalModel, CrossmodalModelConfig

    cfg = CrossmodalModelConfig(body="minilm", target_seq_len=10)
    return task.check_source_matches(CrossmodalModel.build_model(cfg, task))


def _write_split(folder: Path, x: np.ndarray, y: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "train.npz", x=x, y=y)
    (folder / "meta.json").write_text('{"n_classes": 2}')
    return folder


def test_bad_inputs_give_one_clear_error_each(data, tmp_path):
    from ofa_ext.data.source_features import save_source_features

    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="needs --orca-source-features"):
        _task(data, source="")
    with pytest.raises(ValueError, match="--orca-objective must be one of"):
        _task(data, orca_objective="wasserstein")
    with pytest.raises(ValueError, match="--orca-maxsamples 1"):
        _task(data, orca_maxsamples=1)
    one_sample = _write_split(tmp_path / "one", rng.normal(size=(5, 1, 20)), np.array([0, 0, 0, 0, 1]))
    with pytest.raises(ValueError, match="class 1 has 1 sample"):
        _task(data, folder=one_sample)
    x = rng.normal(size=(6, 1, 20))
    x[2, 0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _task(data, folder=_write_split(tmp_path / "nan", x, np.array([0, 1] * 3)))
    nolabels = tmp_path / "nolab.safetensors"
    from safetensors.torch import save_file

    save_file({"xs": torch.randn(6, 2, 384)}, str(nolabels),
              metadata={"format": "ofa_ext.source_features", "format_version": "1", "meta": "{}"})
    with pytest.raises(ValueError, match="no labels"):
        _task(data, source=nolabels)
    narrow = save_source_features(tmp_path / "narrow.safetensors", torch.randn(6, 2, 8),
                                  torch.zeros(6, 2, dtype=torch.bool), torch.tensor([0, 1] * 3),
                                  {"body_kind": "hf-bert"})
    task = _task(data, source=narrow)
    with pytest.raises(ValueError, match="width 8.*width 384"):
        _model(task)
    other = save_source_features(tmp_path / "other.safetensors", torch.randn(6, 2, 384),
                                 torch.zeros(6, 2, dtype=torch.bool), torch.tensor([0, 1] * 3),
                                 {"body_kind": "hf-roberta"})
    with pytest.raises(ValueError, match="body 'hf-roberta'.*'hf-bert'"):
        _model(_task(data, source=other))
    # a cloud larger than --orca-maxsamples allows (e.g. a caller's own align batch)
    from ofa_ext.criterions.orca_align import OrcaAlignCriterion

    task = _task(data, orca_maxsamples=4)
    model = _model(task)
    crit = OrcaAlignCriterion(task)
    batch = {"shards": {0: torch.randn(5, 1, 150), 1: torch.randn(3, 1, 150)}, "weights": {0: 0.5, 1: 0.5},
             "update": 0}
    with pytest.raises(ValueError, match="5 rows, more than --orca-maxsamples 4"):
        crit(model, {"orca_align": batch})


@pytest.mark.timeout(1800)
def test_refine_with_lora_trains_only_the_pieces_embedder_and_head(data):
    """★ ORCA's refine with PETL: after align (2 updates) + refine (2 updates) with --lora, the
    body's own weights are the pretrained ones; LoRA's B matrices (zero at start) have moved."""
    root, _ = data
    _train(data, root / "lora", 1, ["--orca-stage", "both", "--orca-embedder-epochs", "2", "--max-update", "4",
                                    "--lora", "--lora-r", "4"])
    state = _model_state(root / "lora" / "checkpoint_last.pt")
    lora_b = [k for k in state if "lora_B" in k or "lora_b" in k]
    assert lora_b and any(state[k].abs().max() > 0 for k in lora_b), sorted(state)[:20]
    from ofa_ext.api import load_body

    pretrained = load_body("minilm").state_dict()
    base = {k: v for k, v in state.items() if k.startswith("body.") and "lora" not in k.lower()}
    compared = 0
    for k, v in base.items():
        name = k[len("body."):].replace(".base_layer.", ".")
        if name in pretrained:
            torch.testing.assert_close(v, pretrained[name].float(), msg=k)
            compared += 1
    assert compared >= len(pretrained) - 2, (compared, len(pretrained))  # every body tensor checked


NB360 = sorted(p.name for p in (REPO / "run_scripts" / "orca").glob("*.sh") if p.name not in ("train_orca.sh", "gunpoint.sh"))


@pytest.mark.parametrize("script", NB360)
def test_nb360_scripts_build_commands_fairseq_accepts(script, tmp_path):
    """The NAS-Bench-360 scripts (their released values) without the datasets: DRY_RUN prints the command."""
    import shlex

    from fairseq import options

    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "train.npz", x=np.zeros((10, 1, 20), np.float32), y=np.zeros(10, np.int64))
    env = dict(os.environ, DATA=str(data), DRY_RUN="1", SAVE_DIR=str(tmp_path / "ckpt"),
               SOURCE=str(tmp_path / "source.safetensors"), PYTHONWARNINGS="ignore",
               PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(REPO / "run_scripts" / "orca" / script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    words = shlex.split(proc.stdout.strip().splitlines()[-1])
    parsed = options.parse_args_and_arch(options.get_training_parser(), input_args=words[words.index("--") + 1:])
    assert (parsed.task, parsed.arch, parsed.criterion) == ("orca", "crossmodal_model", "orca_align")
    assert parsed.max_update > 0 and parsed.orca_stage in ("both", "align", "refine")
