"""The OFA vocabulary as a fairseq ``Dictionary``.

OFA shares one dictionary between encoder and decoder: fairseq's four specials, the lines of
``dict.txt`` (GPT-2 token ids written as text), then ``<mask>``, the image codes ``<code_i>`` and the
location tokens ``<bin_i>``. Official checkpoints index their embedding tables with exactly this
order (59,457 entries for the official files), so it must not be re-sorted or padded: fairseq's
``Dictionary.load`` does not call ``finalize``/``pad_to_multiple_`` and neither do we.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

from fairseq.data import Dictionary

PathLike = Union[str, Path]

#: Where to get the vocabulary files when they are missing.
BPE_FILES_HINT = (
    "OFA's vocabulary files (dict.txt, encoder.json, vocab.bpe) are in the `utils/BPE/` folder of "
    "https://github.com/OFA-Sys/OFA, or in this repository's shared/ofa_bpe folder; pass that folder "
    "as --bpe-dir"
)


#: Where a sentencepiece model comes from.
SPM_HINT = "train one with `ofa-train-spm TRAIN.tsv --out DIR` and pass --spm-model DIR/spm.model"


def require_file(path: PathLike, what: str) -> Path:
    """Return ``path`` as a Path, or fail with a message saying what the file is and where to get it."""
    p = Path(path)
    if not p.is_file():
        hint = SPM_HINT if "sentencepiece" in what else BPE_FILES_HINT
        raise FileNotFoundError(f"{what} not found: {p}. {hint[0].upper() + hint[1:]}.")
    return p


def add_ofa_tail(dictionary: Dictionary, num_bins: int = 1000, code_dict_size: int = 8192) -> Dictionary:
    """Append ``<mask>``, ``<code_0..>`` and ``<bin_0..>`` in OFA's order (in place; returned too).

    Shared by the GPT-2 and the sentencepiece dictionaries so that location tokens always sit at the
    end and ``bin id = token - len(dict) + num_bins`` holds for both.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2 (got {num_bins})")
    if code_dict_size < 0:
        raise ValueError(f"code_dict_size must be >= 0 (got {code_dict_size})")
    symbols = ["<mask>"] + [f"<code_{i}>" for i in range(code_dict_size)] + [f"<bin_{i}>" for i in range(num_bins)]
    for sym in symbols:
        if sym in dictionary.indices:
            raise ValueError(f"symbol {sym!r} is already in the dictionary; OFA's tail must be new")
        dictionary.add_symbol(sym)
    return dictionary


def build_ofa_dictionary(bpe_dir: PathLike, num_bins: int = 1000, code_dict_size: int = 8192) -> Dictionary:
    """Build OFA's dictionary from ``bpe_dir/dict.txt`` exactly as OFA's task does."""
    dict_path = require_file(Path(bpe_dir) / "dict.txt", "OFA dictionary file dict.txt")
    dictionary = Dictionary.load(str(dict_path))
    return add_ofa_tail(dictionary, num_bins=num_bins, code_dict_size=code_dict_size)


def dictionary_from_symbols(symbols: Iterable[str], num_bins: int = 1000, code_dict_size: int = 8192) -> Dictionary:
    """A dictionary with fairseq's specials, then ``symbols`` in order, then OFA's tail.

    Used for custom (e.g. sentencepiece) vocabularies; a repeated symbol is an error because it would
    silently shift every later id.
    """
    dictionary = Dictionary()
    for sym in symbols:
        if sym in dictionary.indices:
            raise ValueError(f"symbol {sym!r} occurs twice (or clashes with a special symbol)")
        if any(ch.isspace() for ch in sym):
            raise ValueError(f"symbol {sym!r} contains whitespace; fairseq dictionaries split on whitespace")
        dictionary.add_symbol(sym)
    return add_ofa_tail(dictionary, num_bins=num_bins, code_dict_size=code_dict_size)


def first_bin_id(dictionary: Dictionary, num_bins: int = 1000) -> int:
    """Id of ``<bin_0>``; the bins are the last ``num_bins`` entries, as OFA's decoding assumes."""
    first = len(dictionary) - num_bins
    if dictionary[first] != "<bin_0>" or dictionary[len(dictionary) - 1] != f"<bin_{num_bins - 1}>":
        raise ValueError(
            f"the last {num_bins} dictionary entries are not <bin_0>..<bin_{num_bins - 1}> "
            f"(found {dictionary[first]!r}); was the dictionary built with num_bins={num_bins}?"
        )
    return first


def bin_token_id(dictionary: Dictionary, i: int, num_bins: int = 1000) -> int:
    """Dictionary id of ``<bin_i>``."""
    if not 0 <= i < num_bins:
        raise ValueError(f"bin index {i} outside [0, {num_bins})")
    return first_bin_id(dictionary, num_bins) + i
