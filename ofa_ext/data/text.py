"""Text → dictionary ids, the way OFA's datasets feed the encoder.

Two encoders share one small interface (``encode(text) -> list[int]`` of dictionary ids, no bos/eos,
plus ``decode`` and the ``dictionary`` they index into):

* :class:`GPT2TextEncoder`: OFA's GPT-2 byte-level BPE read from a local ``--bpe-dir``. The BPE
  yields GPT-2 ids; OFA writes them as text and looks each one up in ``dict.txt``'s dictionary, so the
  dictionary id differs from the GPT-2 id. fairseq's own GPT-2 BPE code does the merges.
* :class:`SentencePieceTextEncoder`: a custom vocabulary from a sentencepiece model; its dictionary
  is fairseq's specials + the model's pieces + OFA's ``<mask>``/codes/bins tail, so location tokens
  work the same way.

``pre_caption`` is OFA's caption normalisation (lower-case, strip, word truncation).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

from fairseq.data import Dictionary

from .dictionary import PathLike, build_ofa_dictionary, dictionary_from_symbols, require_file

_LEADING_PUNCT = ",.!?*#:;~"
_MULTI_SPACE = re.compile(r"\s{2,}")


def pre_caption(caption: str, max_words: Optional[int] = None) -> str:
    """Normalise a caption as OFA does before prompting (refcoco.md §2).

    Only runs of two or more whitespace characters are collapsed (OFA's regex), and ``max_words``
    counts space-separated words, not tokens.
    """
    text = caption.lower().lstrip(_LEADING_PUNCT)
    text = text.replace("-", " ").replace("/", " ").replace("<person>", "person")
    text = _MULTI_SPACE.sub(" ", text)
    text = text.rstrip("\n").strip(" ")
    words = text.split(" ")
    if max_words is not None and len(words) > max_words:
        text = " ".join(words[:max_words])
    return text


@runtime_checkable
class TextEncoder(Protocol):
    """What datasets need from a tokenizer: dictionary ids out, no bos/eos added."""

    dictionary: Dictionary

    def encode(self, text: str) -> List[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class GPT2TextEncoder:
    """OFA's GPT-2 BPE over a fairseq dictionary built from the same ``bpe_dir``.

    The BPE tables are loaded lazily and dropped on pickling, so DataLoader workers (fork or spawn)
    get a working copy without shipping megabytes of merges.
    """

    def __init__(self, bpe_dir: PathLike, dictionary: Dictionary):
        self.bpe_dir = Path(bpe_dir)
        self.encoder_json = require_file(self.bpe_dir / "encoder.json", "GPT-2 BPE vocabulary encoder.json")
        self.vocab_bpe = require_file(self.bpe_dir / "vocab.bpe", "GPT-2 BPE merges vocab.bpe")
        self.dictionary = dictionary
        self._bpe = None

    @property
    def bpe(self):
        if self._bpe is None:
            from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

            self._bpe = get_encoder(str(self.encoder_json), str(self.vocab_bpe))
        return self._bpe

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_bpe"] = None
        return state

    def encode(self, text: str) -> List[int]:
        """Dictionary ids of ``text`` (GPT-2 ids missing from dict.txt map to ``<unk>``, as in OFA)."""
        return [self.dictionary.index(str(t)) for t in self.bpe.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """Inverse of :meth:`encode` for BPE tokens; specials, codes and bins are left out."""
        gpt2_ids = []
        for i in ids:
            sym = self.dictionary[int(i)]
            if sym.isdigit():
                gpt2_ids.append(int(sym))
        return self.bpe.decode(gpt2_ids)


def _load_spm(model_file: Path):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(model_file))


def sentencepiece_pieces(model_file: PathLike) -> List[str]:
    """The model's pieces in id order, without its control/unknown pieces (fairseq has its own)."""
    sp = _load_spm(require_file(model_file, "sentencepiece model"))
    return [
        sp.id_to_piece(i)
        for i in range(sp.get_piece_size())
        if not (sp.is_control(i) or sp.is_unknown(i))
    ]


def build_sentencepiece_dictionary(
    model_file: PathLike, num_bins: int = 1000, code_dict_size: int = 8192
) -> Dictionary:
    """fairseq specials + the sentencepiece pieces + OFA's ``<mask>``/codes/bins tail."""
    return dictionary_from_symbols(sentencepiece_pieces(model_file), num_bins, code_dict_size)


class SentencePieceTextEncoder:
    """A sentencepiece vocabulary in place of GPT-2 BPE (for custom-language or tiny-vocab models)."""

    def __init__(self, model_file: PathLike, dictionary: Dictionary):
        self.model_file = require_file(model_file, "sentencepiece model")
        self.dictionary = dictionary
        self._sp = None

    @property
    def sp(self):
        if self._sp is None:
            self._sp = _load_spm(self.model_file)
        return self._sp

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_sp"] = None
        return state

    def encode(self, text: str) -> List[int]:
        return [self.dictionary.index(p) for p in self.sp.encode(text, out_type=str)]

    def decode(self, ids: Sequence[int]) -> str:
        pieces = [self.dictionary[int(i)] for i in ids if int(i) >= self.dictionary.nspecial]
        pieces = [p for p in pieces if not (p == "<mask>" or p.startswith("<code_") or p.startswith("<bin_"))]
        return self.sp.decode_pieces(pieces)


def train_sentencepiece(
    texts: Iterable[str],
    out_dir: PathLike,
    vocab_size: int = 200,
    model_type: str = "unigram",
    name: str = "spm",
) -> Path:
    """Train a small sentencepiece model on ``texts`` and write ``out_dir/<name>.model``.

    Meant for tests and toy vocabularies; deterministic for a given input (single thread).
    """
    import io

    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type=model_type,
        num_threads=1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path = out / f"{name}.model"
    path.write_bytes(buf.getvalue())
    return path


def build_text_encoder(
    kind: str = "gpt2",
    bpe_dir: Optional[PathLike] = None,
    spm_model: Optional[PathLike] = None,
    num_bins: int = 1000,
    code_dict_size: int = 8192,
) -> Tuple[Dictionary, TextEncoder]:
    """Dictionary and matching encoder for a task: ``kind`` is ``"gpt2"`` (needs ``bpe_dir``) or
    ``"sentencepiece"`` (needs ``spm_model``)."""
    if kind == "gpt2":
        if bpe_dir is None:
            raise ValueError("kind='gpt2' needs bpe_dir (the folder with dict.txt, encoder.json, vocab.bpe)")
        dictionary = build_ofa_dictionary(bpe_dir, num_bins=num_bins, code_dict_size=code_dict_size)
        return dictionary, GPT2TextEncoder(bpe_dir, dictionary)
    if kind == "sentencepiece":
        if spm_model is None:
            raise ValueError("kind='sentencepiece' needs spm_model (a sentencepiece .model file)")
        dictionary = build_sentencepiece_dictionary(spm_model, num_bins=num_bins, code_dict_size=code_dict_size)
        return dictionary, SentencePieceTextEncoder(spm_model, dictionary)
    raise ValueError(f"unknown text encoder kind {kind!r}; expected 'gpt2' or 'sentencepiece'")
