"""README's command lines run as written, at toy size, so that README cannot drift from the code.

The "Small CPU recipe" section runs line by line with `$W` set to a temporary folder and only the
sizes turned down (fewer rows and updates); the direct `fairseq-train` call of "Grounding" runs with
its placeholders (DATA, BPE, the big arch and image size) swapped for the tiny setup. Training runs
in processes forked from this one (`fork_helpers.py`), the other commands through their `main()`.
The split sizes (15 training rows, batches of 4) are not multiples of 8, so the outputs also show
that whole-split passes use every row.
"""

import json
import re
import shlex
from pathlib import Path

import pytest

from e2e_helpers import REPO, TINY_MODEL_ARGS
from fork_helpers import run_forked, warm_up

README = REPO / "README.md"
TOY = {"--n-train": "15", "--n-valid": "5", "--n-test": "5", "--max-update": "2", "--total-num-update": "2",
       "--batch-size": "4"}


def code_blocks(section: str) -> list:
    """The fenced code blocks of README's `## section`, continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"README has no section {section!r}"
    blocks = re.findall(r"^```\n(.*?)^```", match.group(1), re.S | re.M)
    return [[line for line in block.replace("\\\n", " ").splitlines() if line.strip()] for block in blocks]


def toy_size(argv: list) -> list:
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in TOY:
            out[i + 1] = TOY[arg]
    return out


def run_command(line: str, work: Path, log: Path) -> None:
    from ofa_ext.cli import evaluate, make_grounding_data, pieces, task_embedding, train_spm

    argv = toy_size(shlex.split(line.replace("$W", str(work))))
    prog, args = argv[0], argv[1:]
    if prog in ("fairseq-train", "ofa-train"):
        code = run_forked(prog, args, log)
        assert code == 0, (line, log.read_text()[-3000:], Path(str(log) + ".err").read_text()[-3000:])
        return
    mains = {"ofa-make-grounding-data": make_grounding_data.main, "ofa-train-spm": train_spm.main,
             "ofa-evaluate": evaluate.main, "ofa-pieces": pieces.main, "ofa-task-embedding": task_embedding.main}
    assert prog in mains, f"README runs {prog}, which this test does not know"
    assert mains[prog](args) == 0, line


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, monkeypatch_module):
    work = tmp_path_factory.mktemp("recipe")
    monkeypatch_module.chdir(REPO)  # README's relative paths (--user-dir ofa_ext) are relative to the repo
    (block,) = code_blocks("Small CPU recipe")
    first_training = next(line for line in block if line.startswith("ofa-train "))
    warm_up(shlex.split(first_training.replace("$W", str(work)))[1:])
    for i, line in enumerate(block):
        run_command(line, work, work / f"log{i}.txt")
    return work, block


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_recipe_runs_every_stage(recipe):
    work, block = recipe
    assert [line.split()[0] for line in block] == [
        "ofa-make-grounding-data", "ofa-train-spm", "ofa-train", "ofa-evaluate", "ofa-train", "ofa-pieces",
        "ofa-pieces", "ofa-task-embedding"]
    assert (work / "experts" / "refcoco.safetensors").is_file()


def test_whole_split_passes_use_every_row(recipe):
    """15 training rows in batches of 4 (fairseq's multiple-of-8 rule would drop the last 3), 5 test rows."""
    work, _ = recipe
    summary = json.loads((work / "eval" / "summary.json").read_text())
    assert (summary["n"], summary["rows"], summary["skipped"]) == (5, 5, 0)
    meta = json.loads((work / "task_emb" / "refcoco.json").read_text())
    assert (meta["split_rows"], meta["rows_seen"], meta["rows_skipped"]) == (15, 15, 0)
    assert meta["task"] == "refcoco"
    log = "".join(p.read_text() for p in work.glob("log*.txt"))
    assert re.search(r"valid on 'valid' subset .*\| rows 5 \| skipped 0", log), log[-2000:]


def test_grounding_direct_call_runs(recipe, tmp_path):
    """The direct fairseq-train call of the Grounding section, placeholders swapped for the toy setup."""
    work, _ = recipe
    (line,) = [ln for block in code_blocks("Grounding: train and evaluate") for ln in block
               if ln.startswith("fairseq-train")]
    data = work / "data"
    line = (line.replace("fairseq-train DATA", f"fairseq-train {data}").replace("--arch ofa_base ", "")
            .replace("--bpe-dir BPE", f"--spm-model {data / 'spm.model'}")
            .replace("--patch-image-size 512", ""))
    line += " " + " ".join(TINY_MODEL_ARGS) + f" --cpu --num-workers 0 --save-dir {tmp_path / 'ckpt'}"
    run_command(line, work, tmp_path / "log.txt")
    assert (tmp_path / "ckpt" / "checkpoint_best.pt").is_file()
