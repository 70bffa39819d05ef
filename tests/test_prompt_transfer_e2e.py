"""Prompt tuning and prompt transfer through fairseq: the run scripts at toy size, the trainable sets,
text input through MiniLM's own tokenizer, and the epoch report."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from safetensors.torch import load_file, save_file

from bodies_helpers import save_tiny
from e2e_helpers import REPO
from ofa_ext.data.arrays_writer import write_array_dataset
from ofa_ext.evaluation.epoch_report import report

SCRIPTS = REPO / "run_scripts" / "prompt_transfer"


def _digits(out, n=(60, 20, 20)):
    """A small 10-class image set (scikit-learn's 8x8 digits) as {split}.npz."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    start = 0
    out.mkdir(parents=True, exist_ok=True)
    for split, size in zip(("train", "valid", "test"), n):
        np.savez(out / f"{split}.npz", x=x[start:start + size], y=y[start:start + size].astype(np.int64))
        start += size
    (out / "meta.json").write_text(json.dumps({"n_classes": 10}))
    return out


def _script(name, cwd, **variables):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", **variables)
    proc = subprocess.run(["bash", str(SCRIPTS / name)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pt")
    return {"root": root, "body": save_tiny("bert", str(root)), "digits": _digits(root / "digits")}


def test_prompt_tuning_script_on_text_with_minilm(tmp_path):
    data = tmp_path / "polarity"
    write_array_dataset("polarity", data, seed=1)
    out = tmp_path / "prompts" / "polarity.safetensors"
    _script("prompt_tuning.sh", tmp_path, DATA=str(data), DATASET="polarity", PROMPT_LEN="4", TARGET_SEQ_LEN="16",
            MAX_EPOCH="1", BATCH_SIZE="64", SAVE_DIR=str(tmp_path / "ckpt"), PROMPT_OUT=str(out))
    tensors = load_file(str(out))
    assert tensors["body.input_prompt.prompt"].shape == (4, 384)  # MiniLM's width
    assert set(tensors) == {"body.input_prompt.prompt", "head.linear.weight", "head.linear.bias"}  # body frozen
    rep = json.loads((tmp_path / "ckpt" / "report.json").read_text())
    assert rep["validations"] == 1 and 0 <= rep["val_selected_test"] <= 100


def test_prompt_transfer_script(tiny, tmp_path):
    """The attention mode (the script's most options); every mode is built in process below."""
    source = tmp_path / "src.safetensors"
    save_file({"prompt": torch.randn(5, 32)}, str(source))  # the tiny body's width
    save = tmp_path / "ckpt"
    _script("prompt_transfer.sh", tmp_path, DATA=str(tiny["digits"]), BODY=f"hf:{tiny['body']}", MODE="attention",
            SOURCE_PROMPT=str(source), TARGET_SEQ_LEN="16", MAX_EPOCH="2", BATCH_SIZE="20", SAVE_DIR=str(save),
            TOTAL_LEN="6", ATTN_SRC_LEN="2")
    rep = json.loads((save / "report.json").read_text())
    assert rep["validations"] == 2 and rep["best_epoch_test"] >= rep["val_selected_test"]
    state = torch.load(save / "checkpoint_best.pt", map_location="cpu", weights_only=False)["model"]
    torch.testing.assert_close(state["body.input_prompt.prompt.source"], load_file(str(source))["prompt"])


def _build(tiny, tmp_path, mode, width=32, **task_options):
    from ofa_ext.models.crossmodal.model import CrossmodalModelConfig
    from ofa_ext.tasks.prompt_transfer import PromptTransferConfig, PromptTransferTask

    source = tmp_path / f"src{width}.safetensors"
    save_file({"prompt": torch.randn(5, width)}, str(source))
    cfg = PromptTransferConfig(data=str(tiny["digits"]), pt_source_prompt=str(source), pt_mode=mode, **task_options)
    task = PromptTransferTask.setup_task(cfg)
    model_cfg = OmegaConf.structured(CrossmodalModelConfig(body=f"hf:{tiny['body']}", target_seq_len=16))
    with open_dict(model_cfg):
        model_cfg._name = "crossmodal_model"  # as fairseq's own config carries it
    return task.build_model(model_cfg)


@pytest.mark.parametrize("mode,prompt_params", [
    ("frozen", set()),
    ("projection", {"projector.weight", "projector.bias"}),
    ("attention", {"attention.queries", "attention.key.weight", "attention.key.bias", "attention.value.weight",
                   "attention.value.bias", "target"}),
])
def test_only_prompt_parts_head_and_embedder_train(tiny, tmp_path, mode, prompt_params):
    options = {"pt_total_len": 6, "pt_attn_src_len": 2} if mode == "attention" else {}
    model = _build(tiny, tmp_path, mode, **options)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n[len("body.input_prompt.prompt."):] for n in trainable if n.startswith("body.")} == prompt_params
    assert {n.split(".")[0] for n in trainable} <= {"embedder", "head", "body"}
    assert any(n.startswith("head.") for n in trainable) and any(n.startswith("embedder.") for n in trainable)
    out = model(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 10)


def test_bad_source_prompts(tiny, tmp_path):
    with pytest.raises(ValueError, match="width 16 but the body has 32.*--pt-mode projection"):
        _build(tiny, tmp_path, "frozen", width=16)
    with pytest.raises(ValueError, match="--pt-attn-src-len 9"):
        _build(tiny, tmp_path, "attention", pt_total_len=6, pt_attn_src_len=9)
    from ofa_ext.tasks.prompt_transfer import PromptTransferConfig, PromptTransferTask

    with pytest.raises(ValueError, match="missing.safetensors: no such file"):
        PromptTransferTask.setup_task(PromptTransferConfig(data=str(tiny["digits"]),
                                                           pt_source_prompt=str(tmp_path / "missing.safetensors")))


def test_prompt_tuning_insists_on_a_prompt_only():
    from ofa_ext.models.crossmodal.model import CrossmodalModelConfig
    from ofa_ext.tasks.prompt_tuning import check_prompt_only

    with pytest.raises(ValueError, match="give --input-prompt-length P > 0"):
        check_prompt_only(CrossmodalModelConfig())
    with pytest.raises(ValueError, match="also switched on: lora"):
        check_prompt_only(CrossmodalModelConfig(input_prompt_length=4, lora=True))
    check_prompt_only(CrossmodalModelConfig(input_prompt_length=4))


def test_text_embedder_is_the_bodys_own_embedding():
    from ofa_ext.api import load_body
    from ofa_ext.models.crossmodal.text_embedder import TextEmbedder, load_tokenizer

    body = load_body("minilm")
    tok = load_tokenizer("minilm")
    emb = TextEmbedder(body, tok, max_tokens=12)
    texts = ["a fine, moving film", "dull"]
    embeds, pad = emb(texts)
    enc = tok(texts, padding="max_length", truncation=True, max_length=12, return_tensors="pt")
    torch.testing.assert_close(embeds, body.model.embeddings(input_ids=enc["input_ids"]))
    assert torch.equal(pad, enc["attention_mask"] == 0) and pad[1].sum() > pad[0].sum()
    with pytest.raises(ValueError, match="--target-seq-len 1000"):
        TextEmbedder(body, tok, max_tokens=1000)


SIMPLE = [
    "INFO:valid:epoch 001 | valid on 'valid' subset | loss 0.7 | accuracy 50 | num_updates 4",
    "INFO:test:epoch 001 | valid on 'test' subset | loss 0.6 | accuracy 70 | num_updates 4",
    "2026-12-01 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 0.5 | accuracy 60 | num_updates 8",
    "2026-12-01 | INFO | test | epoch 002 | valid on 'test' subset | loss 0.5 | accuracy 65 | num_updates 8",
    'INFO:valid:{"epoch": 3, "valid_loss": "0.4", "valid_accuracy": "60", "valid_num_updates": "12"}',
    'INFO:test:{"epoch": 3, "test_loss": "0.4", "test_accuracy": "90", "test_num_updates": "12"}',
]


def test_epoch_report_best_epoch_and_validation_selected():
    rep = report(SIMPLE)
    assert rep["best_epoch_test"] == 90 and rep["validations"] == 3
    assert rep["val_selected_update"] == 8 and rep["val_selected_test"] == 65  # tie at 60: the earlier one
    assert report(SIMPLE, metric="loss", maximize=False)["val_selected_update"] == 12
    with pytest.raises(ValueError, match="no validation on subset 'test'"):
        report(SIMPLE[::2])


def test_epoch_report_console_script(tmp_path, capsys):
    from ofa_ext.evaluation.epoch_report import main

    log = tmp_path / "train.log"
    log.write_text("\n".join(SIMPLE) + "\n")
    assert main([str(log)]) == 0
    assert json.loads(capsys.readouterr().out)["best_epoch_test"] == 90
    log.write_text("\n".join(SIMPLE[::2]) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(log)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "train.log" in err and "'test'" in err
