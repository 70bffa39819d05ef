"""The vision–language miniature of cross-modal adaptation: a tiny CLIP trained here, on CPU.

No image–text aligned weights exist offline, so the demo makes its own: single-object images
(colour × shape × size, drawn like ``ofa-make-grounding-data``'s scenes) with captions ("a big red
circle"), a transformers ``CLIPModel`` with a small config trained contrastively for a few
hundred steps, and a word-level tokenizer; both saved with ``save_pretrained`` into one folder,
which ``ofa-extract-features --body hf:DIR`` then loads as it would a user's CLIP checkpoint.
It is a miniature: tiny model, synthetic images, a vocabulary of a few dozen words.
"""

import json
import random
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
import torch

from ...data.synthetic import COLOURS, SHAPES, SceneObject, _background, draw_shape
from ...data.xmodal_sources import CLIP_MEAN_STD
from ...data.transforms import to_normalised_tensor

SIZES = {"small": (0.30, 0.42), "big": (0.55, 0.75)}
SPECIALS = ["[PAD]", "[UNK]", "<bos>", "<eos>"]
FILLER = ["a", "an", "the", "photo", "of", "picture", "image", "itap", "bad", "origami", "large", "in", "video",
          "game", "art", "type", "shape", "object", "one", "this", "is", "."]


def vocabulary() -> List[str]:
    return SPECIALS + list(COLOURS) + list(SHAPES) + list(SIZES) + FILLER


def object_image(rng: random.Random, colour: str, shape: str, size_word: str, image_size: int):
    """One object of ``colour``/``shape`` and a ``size_word`` size, at a random place."""
    from PIL import Image, ImageDraw

    lo, hi = SIZES[size_word]
    side = max(4, int(round(image_size * rng.uniform(lo, hi))))
    x0, y0 = rng.randint(0, image_size - side), rng.randint(0, image_size - side)
    image = Image.new("RGB", (image_size, image_size), _background(rng))
    draw_shape(ImageDraw.Draw(image), SceneObject(shape, colour, (x0, y0, x0 + side, y0 + side)))
    return image


def caption(rng: random.Random, colour: str, shape: str, size_word: str) -> str:
    forms = ["a {s} {c} {h}", "a photo of a {s} {c} {h}.", "{c} {h}", "a {c} {h}", "the {s} {h} is {c}"]
    return rng.choice(forms).format(s=size_word, c=colour, h=shape)


def save_word_tokenizer(folder: Union[str, Path], words: List[str], max_length: int) -> None:
    """A word-level fast tokenizer (``AutoTokenizer`` loads it) adding ``<bos> … <eos>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                       special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="<bos>",
                                   eos_token="<eos>", model_max_length=max_length)
    fast.save_pretrained(str(folder))


def tiny_clip(vocab_size: int, image_size: int = 48, width: int = 64, layers: int = 2, max_length: int = 16):
    from transformers import CLIPConfig, CLIPModel

    words = vocabulary()
    text = dict(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
                intermediate_size=2 * width, max_position_embeddings=max_length, pad_token_id=words.index("[PAD]"),
                bos_token_id=words.index("<bos>"), eos_token_id=words.index("<eos>"))
    vision = dict(image_size=image_size, patch_size=8, hidden_size=width, num_hidden_layers=layers,
                  num_attention_heads=4, intermediate_size=2 * width)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))


def pretrain_tiny_clip(folder: Union[str, Path], steps: int = 400, batch_size: int = 64, seed: int = 0,
                       image_size: int = 48, pool: int = 3000, lr: float = 2e-3) -> Dict:
    """Train a tiny CLIP contrastively on generated object images + captions; ``save_pretrained``."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    words = vocabulary()
    save_word_tokenizer(folder, words, 16)
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    images, texts = [], []
    for _ in range(pool):
        c, h, s = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(SIZES))
        images.append(to_normalised_tensor(object_image(rng, c, h, s, image_size), *CLIP_MEAN_STD))
        texts.append(caption(rng, c, h, s))
    pixels = torch.stack(images)
    enc = tok(texts, padding="max_length", max_length=16, return_tensors="pt")
    model = tiny_clip(len(words), image_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(pool, generator=g)[:batch_size]
        out = model(input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx],
                    pixel_values=pixels[idx], return_loss=True)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sched.step()
        losses.append(float(out.loss))
    model.eval()
    model.save_pretrained(str(folder))
    info = {"steps": steps, "batch_size": batch_size, "pool": pool, "seed": seed, "image_size": image_size,
            "loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:])),
            "note": "MINIATURE: a tiny CLIP trained here on generated single-object images with captions"}
    (folder / "MINIATURE.json").write_text(json.dumps(info, indent=1))
    return info


def write_object_folders(root: Union[str, Path], per_class: Tuple[int, int, int] = (16, 4, 10), seed: int = 7,
                         image_size: int = 48) -> Path:
    """Image folders ``ROOT/{train,valid,test}/{colour}_{shape}/*.png`` + ``ROOT/classnames.txt``."""
    root = Path(root)
    rng = random.Random(seed)
    classes = [(c, h) for c in COLOURS for h in SHAPES]
    for split, n in zip(("train", "valid", "test"), per_class):
        for c, h in classes:
            d = root / split / f"{c}_{h}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                object_image(rng, c, h, rng.choice(list(SIZES)), image_size).save(d / f"{i:03d}.png")
    (root / "classnames.txt").write_text("".join(f"{c}_{h}\t{c} {h}\n" for c, h in classes))
    return root
