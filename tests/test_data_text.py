"""Dictionary, GPT-2 BPE and sentencepiece encoders, pre_caption (against OFA's reference tokens)."""

import json
import pickle
from pathlib import Path

import pytest

from ofa_ext.data.dictionary import bin_token_id, build_ofa_dictionary, dictionary_from_symbols, first_bin_id
from ofa_ext.data.text import (
    GPT2TextEncoder,
    SentencePieceTextEncoder,
    TextEncoder,
    build_sentencepiece_dictionary,
    build_text_encoder,
    pre_caption,
    train_sentencepiece,
)

DATA = Path(__file__).resolve().parent / "data"  # copies of the official references; missing = failure
BPE_DIR = DATA / "ofa_bpe"


@pytest.fixture(scope="module")
def gpt2():
    return build_text_encoder("gpt2", bpe_dir=BPE_DIR)


def test_ofa_dictionary_layout(gpt2):
    d, _ = gpt2
    assert len(d) == 59457  # not padded to a multiple of 8
    assert (d.bos(), d.pad(), d.eos(), d.unk()) == (0, 1, 2, 3)
    assert d[4] == "13" and d[50263] == "madeupword0002"
    assert d.index("<mask>") == 50264
    assert d.index("<code_0>") == 50265 and d.index("<code_8191>") == 58456
    assert first_bin_id(d) == 58457 and bin_token_id(d, 999) == 59456 and d[58457 + 12] == "<bin_12>"
    with pytest.raises(ValueError):
        bin_token_id(d, 1000)
    with pytest.raises(ValueError, match="num_bins=500"):
        first_bin_id(d, 500)


def test_dictionary_size_follows_options():
    d = build_ofa_dictionary(BPE_DIR, num_bins=10, code_dict_size=0)
    assert len(d) == 4 + 50260 + 1 + 10 and d[len(d) - 1] == "<bin_9>"


def test_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dict\.txt.*utils/BPE.*shared/ofa_bpe"):
        build_ofa_dictionary(tmp_path)
    (tmp_path / "dict.txt").write_text("13 5\n")
    d = build_ofa_dictionary(tmp_path)
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        GPT2TextEncoder(tmp_path, d)


def test_reference_tokenisation(gpt2):
    d, enc = gpt2
    assert isinstance(enc, TextEncoder)
    ref = json.loads((DATA / "ofa_reference" / "reference.json").read_text())["tokenisation"]
    assert any(k.startswith("extra.") for k in ref)
    for name, row in ref.items():
        assert enc.bpe.encode(row["text"]) == row["gpt2_bpe_ids"], name
        assert enc.encode(row["text"]) == row["dict_ids"], name
        assert enc.decode(row["dict_ids"]) == row["text"], name


def test_refcoco_reference_prompts(gpt2):
    d, enc = gpt2
    rows = json.loads((DATA / "refcoco_reference" / "reference.json").read_text())["rows"]
    for row in rows:
        assert pre_caption(row["text"], 80) == row["caption_after_pre_caption"]
        ids = enc.encode(row["prompt"])
        assert [d[i] for i in [0] + ids + [2]] == row["source_symbols"]


def test_encoder_pickles_without_tables(gpt2):
    _, enc = gpt2
    enc.encode("warm up")
    blob = pickle.dumps(enc)
    assert len(blob) < 3_000_000 and pickle.loads(blob).encode(" a dog") == enc.encode(" a dog")


@pytest.mark.parametrize(
    "raw,max_words,expected",
    [
        ("A Man, in RED.", None, "a man, in red."),
        ("..,!?*#:;~ leading punct", None, "leading punct"),
        ("top-left/right", None, "top left right"),
        ("the <person> there", None, "the person there"),
        ("two  spaces\t\there", None, "two spaces here"),
        ("tab\tkept", None, "tab\tkept"),  # OFA's regex collapses runs of 2+ whitespace only
        ("  padded words \n", None, "padded words"),
        ("one two three four", 2, "one two"),
        ("", 80, ""),
    ],
)
def test_pre_caption(raw, max_words, expected):
    assert pre_caption(raw, max_words) == expected


def test_sentencepiece_encoder_and_dictionary(tmp_path):
    texts = [f"the {c} {s} on the {p}" for c in ("red", "green", "blue") for s in ("circle", "square")
             for p in ("left", "right", "top")] * 5
    model = train_sentencepiece(texts, tmp_path, vocab_size=40)
    d, enc = build_text_encoder("sentencepiece", spm_model=model, num_bins=100, code_dict_size=16)
    assert isinstance(enc, SentencePieceTextEncoder)
    n_pieces = len(d) - 4 - 1 - 16 - 100
    assert 20 <= n_pieces <= 40 and d[4 + n_pieces] == "<mask>" and first_bin_id(d, 100) == len(d) - 100
    ids = enc.encode("the red circle on the left")
    assert ids and all(4 <= i < 4 + n_pieces for i in ids)
    assert enc.decode(ids) == "the red circle on the left"
    assert pickle.loads(pickle.dumps(enc)).encode("blue square") == enc.encode("blue square")
    assert len(build_sentencepiece_dictionary(model, 100, 16)) == len(d)


def test_custom_symbols_must_be_unique():
    with pytest.raises(ValueError, match="twice"):
        dictionary_from_symbols(["a", "b", "a"])
    with pytest.raises(ValueError, match="twice"):
        dictionary_from_symbols(["<pad>"])
    with pytest.raises(ValueError, match="unknown text encoder"):
        build_text_encoder("bert")
