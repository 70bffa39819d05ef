"""ofa-source-features: MiniLM's own embedding-layer outputs of real sentences, labels, file checks."""

import warnings

import pytest
import torch

from ofa_ext.cli.source_features import main
from ofa_ext.data.source_features import load_source_features, save_source_features

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="module")
def polarity_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("src") / "pol.safetensors"
    assert main(["--body", "minilm", "--corpus", "polarity", "--max-rows", "24", "--max-tokens", "16",
                 "--out", str(out)]) == 0
    return out


def test_features_are_minilms_embedding_block_on_its_tokenizer(polarity_file):
    from transformers import AutoModel, AutoTokenizer

    from ofa_ext.data.arrays_sources import load_polarity
    from ofa_ext.models.bodies.hf import minilm_dir

    feats = load_source_features(polarity_file, width=384)
    assert feats.xs.shape == (24, 16, 384) and feats.padding_mask.shape == (24, 16)
    meta = feats.meta
    assert meta["corpus"] == "polarity" and meta["labels"] == "corpus" and meta["T"] == 16
    assert meta["body_kind"] == "hf-bert" and meta["tokenizer"]
    assert set(feats.ys.tolist()) <= {0, 1} and feats.ys.numel() == 24
    # independent recomputation of row 0: the bare HF model's embeddings on the tokenizer output
    raw = load_polarity()
    import numpy as np

    keep = np.sort(np.random.default_rng(0).choice(len(raw.x_train), 24, replace=False))
    tok = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    enc = tok([str(raw.x_train[keep[0]])], padding="max_length", truncation=True, max_length=16,
              return_tensors="pt")
    model = AutoModel.from_pretrained(minilm_dir(), local_files_only=True).eval()
    with torch.no_grad():
        want = model.embeddings(input_ids=enc["input_ids"])[0]
    torch.testing.assert_close(feats.xs[0], want, rtol=1e-5, atol=1e-5)
    assert torch.equal(feats.padding_mask[0], enc["attention_mask"][0] == 0)
    labels = sorted(set(raw.y_train.tolist()))
    assert feats.ys[0] == labels.index(raw.y_train[keep[0]])
    pooled = feats.pooled()
    n = int((~feats.padding_mask[0]).sum())
    torch.testing.assert_close(pooled[0], feats.xs[0, :n].mean(0))


def test_kmeans_labels_when_the_corpus_has_none(tmp_path):
    out = tmp_path / "lee.safetensors"
    assert main(["--corpus", "lee", "--max-rows", "30", "--max-tokens", "8", "--kmeans-k", "3",
                 "--out", str(out)]) == 0
    feats = load_source_features(out)
    assert feats.meta["labels"].startswith("kmeans(k=3") and sorted(set(feats.ys.tolist())) == [0, 1, 2]


def test_bad_feature_files_give_one_line_each(polarity_file, tmp_path):
    with pytest.raises(ValueError, match="width 384.*width 768"):
        load_source_features(polarity_file, width=768)
    with pytest.raises(ValueError, match="body 'hf-bert'.*'hf-roberta'"):
        load_source_features(polarity_file, body_kind="hf-roberta")
    with pytest.raises(FileNotFoundError, match="--orca-source-features"):
        load_source_features(tmp_path / "missing.safetensors")
    xs = torch.randn(4, 2, 3)
    xs[1, 0, 0] = float("nan")
    bad = save_source_features(tmp_path / "nan.safetensors", xs, torch.zeros(4, 2, dtype=torch.bool),
                               torch.zeros(4, dtype=torch.long), {})
    with pytest.raises(ValueError, match="NaN"):
        load_source_features(bad)
    from safetensors.torch import save_file

    save_file({"xs": torch.randn(4, 2, 3)}, str(tmp_path / "nolab.safetensors"),
              metadata={"format": "ofa_ext.source_features", "format_version": "1", "meta": "{}"})
    with pytest.raises(ValueError, match="no labels"):
        load_source_features(tmp_path / "nolab.safetensors")
