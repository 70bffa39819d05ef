"""--seed reaches the data order (task configs take common.seed), and a run is deterministic for a
given seed on one machine: the same command twice gives identical checkpoints and predictions."""

import json

import numpy as np
import pytest
import torch

from e2e_helpers import TINY_MODEL_ARGS, USER_DIR, fairseq_train, make_tiny_grounding_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_grounding_data(tmp_path_factory.mktemp("data"))


def task_from_command_line(data, *extra):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import ofa_ext  # noqa: F401  (registrations)

    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data), "--user-dir", USER_DIR, "--spm-model", str(data / "spm.model"), *TINY_MODEL_ARGS,
        "--batch-size", "8", *extra])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    return task, cfg


def first_epoch_rows(task, cfg) -> list:
    """The uniq_ids of the first epoch's training rows, in the order the trainer sees them."""
    itr = task.get_batch_iterator(dataset=task.dataset("train"), max_sentences=8, seed=cfg.common.seed,
                                  epoch=1).next_epoch_itr(shuffle=True)
    return [str(i) for batch in itr for i in batch["id"]]


def test_seed_reaches_the_data_order(data):
    from fairseq.data import data_utils

    task, cfg = task_from_command_line(data, "--seed", "5")
    assert task.cfg.seed == 5
    ds = task.dataset("train")
    ds.set_epoch(1)
    with data_utils.numpy_seed(5, 1):
        expected = np.random.permutation(len(ds))
    assert np.array_equal(ds.ordered_indices(), expected)
    other, _ = task_from_command_line(data, "--seed", "6")
    other.dataset("train").set_epoch(1)
    assert not np.array_equal(other.dataset("train").ordered_indices(), expected)


def test_file_order_for_rows_and_batches(data):
    file_ids = [line.split("\t", 1)[0] for line in (data / "train.tsv").read_text().splitlines()]
    task, cfg = task_from_command_line(data, "--seed", "5", "--file-order")
    assert first_epoch_rows(task, cfg) == file_ids
    shuffled_task, shuffled_cfg = task_from_command_line(data, "--seed", "5")
    shuffled = first_epoch_rows(shuffled_task, shuffled_cfg)
    assert sorted(shuffled) == sorted(file_ids) and shuffled != file_ids


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _tensors(state) -> dict:
    out = dict(state["model"])
    for k, v in state["last_optimizer_state"]["state"].items():
        out.update({f"adam.{k}.{n}": t for n, t in v.items() if torch.is_tensor(t)})
    return out


def test_same_command_twice_gives_identical_checkpoints_and_predictions(data, tmp_path):
    from ofa_ext.cli.evaluate import main as evaluate

    extra = ["--max-update", "3", "--dropout", "0.1", "--encoder-drop-path-rate", "0.1",
             "--decoder-drop-path-rate", "0.1", "--disable-validation", "--no-epoch-checkpoints"]
    runs = {}
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        fairseq_train(data, tmp_path / name, [*extra, "--seed", seed], cwd=tmp_path)
        runs[name] = _tensors(_state(tmp_path / name / "checkpoint_last.pt"))
    assert runs["a"].keys() == runs["b"].keys()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"]), \
        [k for k in runs["a"] if not torch.equal(runs["a"][k], runs["b"][k])][:5]
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])  # the seed matters

    preds = []
    for name in ("a", "b"):
        out = tmp_path / f"eval_{name}"
        evaluate([str(data), "--path", str(tmp_path / name / "checkpoint_last.pt"), "--gen-subset", "test",
                  "--results-path", str(out), "--batch-size", "8", "--cpu"])
        preds.append([json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()])
    assert len(preds[0]) == 16 and preds[0] == preds[1]
