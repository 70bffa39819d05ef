"""Data layer: OFA dictionary and BPE, TSV reader, datasets, transforms, synthetic data.

Typical use (GPT-2 BPE, OFA's vocabulary)::

    from ofa_ext.data import GroundingDataset, build_text_encoder
    dictionary, encoder = build_text_encoder("gpt2", bpe_dir="path/to/ofa_bpe")
    ds = GroundingDataset.from_tsv("train.tsv", dictionary, encoder, patch_image_size=512)
"""

from .boxes import QuantisedBox, bins_to_token_ids, quantise_box, tokens_to_boxes
from .dictionary import bin_token_id, build_ofa_dictionary, dictionary_from_symbols, first_bin_id
from .grounding_dataset import GROUNDING_PROMPT, REFCOCO_SELECTED_COLS, GroundingDataset
from .text import (
    GPT2TextEncoder,
    SentencePieceTextEncoder,
    TextEncoder,
    build_sentencepiece_dictionary,
    build_text_encoder,
    pre_caption,
    train_sentencepiece,
)
from .tsv import BadRowError, TSVReader, rank_slice

__all__ = [
    "BadRowError", "GPT2TextEncoder", "GROUNDING_PROMPT", "GroundingDataset", "QuantisedBox",
    "REFCOCO_SELECTED_COLS", "SentencePieceTextEncoder", "TSVReader", "TextEncoder", "bin_token_id",
    "bins_to_token_ids", "build_ofa_dictionary", "build_sentencepiece_dictionary", "build_text_encoder",
    "dictionary_from_symbols", "first_bin_id", "pre_caption", "quantise_box", "rank_slice", "tokens_to_boxes",
    "train_sentencepiece",
]
