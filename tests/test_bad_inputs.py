"""The bad-input corpus: every case answers with exit status 2 and ONE line naming what was wrong.

Cases are generated from one tiny dataset and one tiny checkpoint: bad rows, options, checkpoints
(missing, empty, truncated, random bytes) on every load path, pieces, folders, empty splits. The
plugin's commands run in-process (their `main()`), `fairseq-train --user-dir ofa_ext` in processes
forked from this one (`fork_helpers.py`, the plugin's excepthook decides the exit status), and a
few cases as real subprocesses from the command line, `OFA_EXT_DEBUG=1` included.
"""

import logging
import os
import random
import shutil
import sys
from pathlib import Path

import pytest

from e2e_helpers import TINY_MODEL_ARGS, USER_DIR
from fork_helpers import run_forked, warm_up

BAD_ROWS = {  # name -> (column index in OFA's 5-column layout, new value, what the message names)
    "columns": (None, None, "expected 5 tab-separated columns, found 4"),
    "image": (4, "bm90IGFuIGltYWdl", "uniq_id"),
    "box_reversed": (3, "50,50,10,10", "empty or reversed"),
    "box_outside": (3, "0,0,900,900", "outside the"),
    "box_text": (3, "a,b,c,d", "four numbers"),
    "empty_text": (2, "  ", "text is empty"),
}


def _train_args(data: Path, save: Path, *extra) -> list:
    return [str(data), "--user-dir", USER_DIR, "--spm-model", str(data / "spm.model"), "--save-dir", str(save),
            "--cpu", *TINY_MODEL_ARGS, "--criterion", "adjust_label_smoothed_cross_entropy", "--optimizer", "adam",
            "--lr", "1e-3", "--batch-size", "2", "--num-workers", "0", "--log-format", "simple", "--seed", "3",
            "--no-progress-bar", *extra]


def _corrupt_copies(good: Path, out: Path) -> dict:
    data = good.read_bytes()
    files = {"empty": b"", "truncated": data[: len(data) // 2], "random": random.Random(0).randbytes(4096),
             "text": b"this is not a checkpoint\n"}
    paths = {}
    for name, content in files.items():
        paths[name] = out / f"{name}.pt"
        paths[name].write_bytes(content)
    paths["missing"] = out / "missing.pt"
    return paths


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """Data folders (good and bad), a checkpoint of a 1-update run, and broken copies of it."""
    from ofa_ext.cli.train_spm import main as train_spm
    from ofa_ext.data.synthetic import make_grounding_splits

    root = tmp_path_factory.mktemp("bad_inputs")
    good = root / "good"
    make_grounding_splits(good, variant="refcoco", seed=1, n_train=4, n_valid=3, n_test=3, image_size=64)
    train_spm([str(good / "train.tsv"), "--out", str(good), "--vocab-size", "100"])
    folders = {"good": good}
    rows = (good / "test.tsv").read_text().splitlines()

    def folder(name: str, test_text: str) -> Path:
        f = root / name
        f.mkdir()
        for split in ("train", "valid"):
            shutil.copy(good / f"{split}.tsv", f / f"{split}.tsv")
        shutil.copy(good / "spm.model", f / "spm.model")
        (f / "test.tsv").write_text(test_text)
        return f

    for name, (col, value, _) in BAD_ROWS.items():
        cols = rows[1].split("\t")
        if col is None:
            del cols[1]
        else:
            cols[col] = value
        folders[name] = folder(f"row_{name}", "\n".join([rows[0], "\t".join(cols), rows[2]]) + "\n")
    all_bad = rows[1].split("\t")
    all_bad[3] = "50,50,10,10"
    folders["all_bad"] = folder("all_bad", "\t".join(all_bad) + "\n")
    folders["empty"] = folder("empty", "")
    folders["blank"] = folder("blank", "\n  \n\r\n")
    utf = folder("row_not_utf8", "")
    cols = rows[1].split("\t")
    (utf / "test.tsv").write_bytes((rows[0] + "\n").encode() + "\t".join(cols[:2]).encode() + b"\t\xff\xfe\t"
                                   + "\t".join(cols[3:]).encode() + b"\n")
    folders["not_utf8"] = utf

    save = root / "run"
    warm_up(_train_args(good, save))
    assert run_forked("fairseq-train", _train_args(good, save, "--max-update", "1", "--disable-validation"),
                      root / "run.log") == 0, (root / "run.log.err").read_text()[-3000:]
    ckpt = save / "checkpoint_last.pt"
    broken = root / "broken"
    broken.mkdir()
    readonly = root / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    pieces = root / "random.safetensors"
    pieces.write_bytes(random.Random(1).randbytes(512))
    return {"root": root, "data": folders, "ckpt": ckpt, "broken": _corrupt_copies(ckpt, broken),
            "readonly": readonly, "random_pieces": pieces}


# ---------------------------------------------------------------------------------- in-process


def _evaluate(ctx, data="good", ckpt=None, *extra):
    path = ckpt if ckpt is not None else ctx["ckpt"]
    return ["--path", str(path), "--results-path", str(ctx["root"] / "eval_out"), "--cpu", "--batch-size", "2",
            str(ctx["data"][data] if data in ctx["data"] else data), *extra]


def _cases():
    from ofa_ext.cli import ckpt_info, evaluate, pieces, task_embedding, task_similarity, train_spm

    cases = {}
    for name, (_, _, says) in BAD_ROWS.items():
        cases[f"evaluate-row-{name}"] = (evaluate.main, lambda c, n=name: _evaluate(c, n),
                                         ["test.tsv:", "--skip-bad-rows", says])
    cases["evaluate-row-not-utf8"] = (evaluate.main, lambda c: _evaluate(c, "not_utf8"), ["test.tsv:2", "UTF-8"])
    cases["evaluate-all-rows-bad-skipped"] = (evaluate.main, lambda c: _evaluate(c, "all_bad", None, "--skip-bad-rows"),
                                              ["test.tsv", "none of its 1 row(s)"])
    cases["evaluate-empty-split"] = (evaluate.main, lambda c: _evaluate(c, "empty"), ["test.tsv", "has no rows"])
    cases["evaluate-blank-split"] = (evaluate.main, lambda c: _evaluate(c, "blank"), ["test.tsv", "has no rows"])
    cases["evaluate-missing-data-folder"] = (evaluate.main, lambda c: _evaluate(c, str(c["root"] / "nowhere")),
                                             ["data folder not found", "nowhere"])
    cases["evaluate-missing-split"] = (evaluate.main, lambda c: _evaluate(c, "good", None, "--gen-subset", "dev"),
                                       ["dev.tsv", "not found"])
    cases["evaluate-bad-overrides-json"] = (evaluate.main, lambda c: _evaluate(c, "good", None, "--model-overrides", "{bpe"),
                                            ["--model-overrides", "JSON"])
    cases["evaluate-bad-selected-cols"] = (
        evaluate.main, lambda c: _evaluate(c, "good", None, "--model-overrides", '{"selected_cols": "0,9,2,3"}'),
        ["test.tsv", "selected_cols", "columns"])
    cases["evaluate-results-path-is-a-file"] = (
        evaluate.main, lambda c: _evaluate(c)[:3] + [str(c["data"]["good"] / "test.tsv")] + _evaluate(c)[4:],
        ["--results-path", "not a folder"])
    cases["evaluate-results-path-read-only"] = (
        evaluate.main, lambda c: _evaluate(c)[:3] + [str(c["readonly"] / "out")] + _evaluate(c)[4:],
        ["--results-path", "readonly"])
    cases["evaluate-results-path-read-only-folder"] = (
        evaluate.main, lambda c: _evaluate(c)[:3] + [str(c["readonly"])] + _evaluate(c)[4:],
        ["--results-path", "cannot write"])
    cases["evaluate-missing-spm-model"] = (
        evaluate.main, lambda c: _evaluate(c, "good", None, "--model-overrides", '{"spm_model": "nowhere/spm.model"}'),
        ["sentencepiece model not found", "ofa-train-spm"])
    for kind, says in [("missing", "no such checkpoint"), ("empty", "empty (0 bytes"), ("truncated", "truncated"),
                       ("random", "not a torch checkpoint"), ("text", "not a torch checkpoint")]:
        cases[f"evaluate-checkpoint-{kind}"] = (evaluate.main, lambda c, k=kind: _evaluate(c, "good", c["broken"][k]),
                                                ["--path", f"{kind}.pt", says])
        cases[f"ckpt-info-{kind}"] = (ckpt_info.main, lambda c, k=kind: [str(c["broken"][k])], [f"{kind}.pt", says])
        cases[f"pieces-export-{kind}"] = (pieces.main, lambda c, k=kind: ["export", str(c["broken"][k]),
                                                                          str(c["root"] / "p.safetensors")],
                                          [f"{kind}.pt", says])
    cases["pieces-export-no-petl"] = (pieces.main, lambda c: ["export", str(c["ckpt"]), str(c["root"] / "p.safetensors")],
                                      ["checkpoint_last.pt", "without PETL flags"])
    cases["pieces-info-random-bytes"] = (pieces.main, lambda c: ["info", str(c["random_pieces"])], ["random.safetensors"])
    cases["pieces-info-missing"] = (pieces.main, lambda c: ["info", str(c["root"] / "absent.safetensors")],
                                    ["absent.safetensors"])
    cases["similarity-missing-embedding"] = (task_similarity.main, lambda c: [str(c["root"] / "absent.safetensors"),
                                                                              "--no-plot", "--out", str(c["root"] / "s")],
                                             ["absent.safetensors"])
    for kind, says in [("truncated", "truncated"), ("random", "not a torch checkpoint")]:
        cases[f"taskemb-finetune-from-model-{kind}"] = (
            task_embedding.main, lambda c, k=kind: [
                str(c["data"]["good"]), "--spm-model", str(c["data"]["good"] / "spm.model"), *TINY_MODEL_ARGS,
                "--criterion", "adjust_label_smoothed_cross_entropy", "--batch-size", "2", "--cpu", "--adapter",
                "--adapter-dim", "4", "--finetune-from-model", str(c["broken"][k]),
                "--task-emb-file-path", str(c["root"] / "emb.safetensors")],
            ["--finetune-from-model", f"{kind}.pt", says])
    cases["train-spm-empty-tsv"] = (train_spm.main, lambda c: [str(c["data"]["empty"] / "test.tsv"), "--out",
                                                               str(c["root"] / "spm")], ["no rows", "test.tsv"])
    return cases


CASES = _cases()


def assert_one_line(prog: str, err: str, code, must_name: list) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert code == 2, (code, err[-3000:])
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    for needle in must_name:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_command_answers_in_one_line(case, ctx, capsys):
    main, argv, must_name = CASES[case]
    prog = {"evaluate": "ofa-evaluate", "ckpt": "ofa-ckpt-info", "pieces": "ofa-pieces",
            "similarity": "ofa-task-similarity", "train": "ofa-train-spm", "taskemb": "ofa-task-embedding"}[case.split("-")[0]]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv(ctx))
    line = assert_one_line(prog, capsys.readouterr().err, exit_info.value.code, must_name)
    assert "\n" not in str(exit_info.value) and line.endswith(str(exit_info.value).split(": ", 1)[-1])


# ------------------------------------------------------------------ fairseq-train (forked processes)


def _train_cases():
    cases = {}
    for data, says in [("empty", "has no rows"), ("blank", "has no rows")]:
        cases[f"train-{data}-train-split"] = (lambda c, d=data: _train_args(_with_train(c, d), c["root"] / f"s_{d}"),
                                              ["train.tsv", says])
    cases["train-bad-row-in-validation"] = (lambda c: _train_args(c["data"]["box_reversed"], c["root"] / "s_v",
                                                                  "--valid-subset", "test", "--max-update", "1"),
                                            ["test.tsv:2", "--skip-bad-rows", "reversed"])
    cases["train-no-batch-survives-the-multiple-of-8"] = (
        lambda c: _train_args(c["data"]["good"], c["root"] / "s_b", "--batch-size", "4"),
        ["train.tsv", "4 row(s) make no training batch", "--required-batch-size-multiple"])
    cases["train-missing-data-folder"] = (lambda c: _train_args(c["root"] / "nowhere", c["root"] / "s_m")[:3]
                                          + ["--spm-model", str(c["data"]["good"] / "spm.model")]
                                          + _train_args(c["root"] / "nowhere", c["root"] / "s_m")[5:],
                                          ["data folder not found", "nowhere"])
    cases["train-missing-spm-model"] = (lambda c: _train_args(c["data"]["good"], c["root"] / "s_spm")[:3]
                                        + ["--spm-model", str(c["root"] / "none.model")]
                                        + _train_args(c["data"]["good"], c["root"] / "s_spm")[5:],
                                        ["sentencepiece model not found", "ofa-train-spm"])
    cases["train-bad-eval-args"] = (lambda c: _train_args(c["data"]["good"], c["root"] / "s_e", "--eval-acc",
                                                          "--eval-args", "{beam"), ["--eval-args", "JSON"])
    cases["train-restore-file-missing"] = (lambda c: _train_args(c["data"]["good"], c["root"] / "s_r",
                                                                 "--restore-file", str(c["broken"]["missing"])),
                                           ["--restore-file", "missing.pt", "no such checkpoint"])
    for kind, says in [("empty", "empty (0 bytes"), ("truncated", "truncated"), ("random", "not a torch checkpoint")]:
        cases[f"train-restore-file-{kind}"] = (
            lambda c, k=kind: _train_args(c["data"]["good"], c["root"] / f"s_r{k}", "--restore-file", str(c["broken"][k])),
            ["--restore-file", f"{kind}.pt", says])
        cases[f"train-finetune-from-model-{kind}"] = (
            lambda c, k=kind: _train_args(c["data"]["good"], c["root"] / f"s_f{k}", "--finetune-from-model",
                                          str(c["broken"][k])),
            ["--finetune-from-model", f"{kind}.pt", says])
    cases["train-truncated-last-without-sibling"] = (lambda c: _train_args(c["data"]["good"], _lone_truncated_last(c)),
                                                     ["checkpoint_last.pt", "truncated", "no complete checkpoint"])
    return cases


def _with_train(ctx, name: str) -> Path:
    """A data folder whose train.tsv is the `name` case's test.tsv (valid.tsv good)."""
    f = ctx["root"] / f"train_{name}"
    if not f.exists():
        shutil.copytree(ctx["data"]["good"], f)
        shutil.copy(ctx["data"][name] / "test.tsv", f / "train.tsv")
    return f


def _lone_truncated_last(ctx) -> Path:
    save = ctx["root"] / "s_lone"
    save.mkdir(exist_ok=True)
    shutil.copy(ctx["broken"]["truncated"], save / "checkpoint_last.pt")
    return save


TRAIN_CASES = _train_cases()


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_fairseq_train_answers_in_one_line(case, ctx, tmp_path):
    argv, must_name = TRAIN_CASES[case]
    log = tmp_path / "log.txt"
    code = run_forked("fairseq-train", argv(ctx), log)
    assert_one_line("fairseq-train", Path(str(log) + ".err").read_text(), code, must_name)


def test_truncated_best_is_reported_and_recovered_from_last(ctx, tmp_path):
    """A kill while fairseq copied checkpoint_best.pt: the resume says so and continues from last."""
    save = tmp_path / "save"
    save.mkdir()
    shutil.copy(ctx["ckpt"], save / "checkpoint_last.pt")
    shutil.copy(ctx["broken"]["truncated"], save / "checkpoint_best.pt")
    (save / "checkpoint_last.pt.tmp").write_bytes(b"")
    log = tmp_path / "log.txt"
    code = run_forked("fairseq-train", _train_args(ctx["data"]["good"], save, "--max-update", "2",
                                                   "--disable-validation"), log)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "checkpoint_best.pt: the file is truncated" in text and "removed it (resuming from checkpoint_last.pt" in text
    assert "removed stale temporary file" in text and "Loaded checkpoint" in text and "@ 1 updates" in text
    assert not (save / "checkpoint_last.pt.tmp").exists()


# ----------------------------------------------------------------- real processes, from the shell


def _subprocess(cmd: list, env_extra: dict = None):
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **(env_extra or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_fairseq_train_empty_split_from_the_shell(ctx):
    """The issue's IndexError case, through the real `fairseq-train` entry point."""
    argv = _train_args(_with_train(ctx, "empty"), ctx["root"] / "s_shell")
    proc = _subprocess([sys.executable, "-c", "from fairseq_cli.train import cli_main; cli_main()", *argv])
    line = assert_one_line("-c", proc.stderr, proc.returncode, ["train.tsv", "has no rows"])
    assert "OFA_EXT_DEBUG=1" in line
    debug = _subprocess([sys.executable, "-c", "from fairseq_cli.train import cli_main; cli_main()", *argv],
                        {"OFA_EXT_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "has no rows" in debug.stderr


def test_ofa_evaluate_truncated_checkpoint_from_the_shell(ctx):
    proc = _subprocess([sys.executable, "-m", "ofa_ext.cli.evaluate", *_evaluate(ctx, "good", ctx["broken"]["truncated"])])
    assert_one_line("ofa-evaluate", proc.stderr, proc.returncode, ["--path", "truncated.pt", "truncated"])


def test_evaluate_skip_bad_rows_warns_once_each_and_counts(ctx, tmp_path, caplog):
    import json

    from ofa_ext.cli import evaluate

    out = tmp_path / "eval"
    argv = _evaluate(ctx, "box_reversed", None, "--skip-bad-rows")
    argv[argv.index("--results-path") + 1] = str(out)
    with caplog.at_level(logging.WARNING):
        assert evaluate.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n"], summary["rows"], summary["skipped"]) == (2, 3, 1)
    row_warnings = [r for r in caplog.records if "skipping bad row" in r.getMessage()]
    assert len(row_warnings) == 1 and "test.tsv:2" in row_warnings[0].getMessage()
    assert any("1 of 3 row(s) skipped" in r.getMessage() for r in caplog.records)
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2
