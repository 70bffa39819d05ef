"""ofa-source-features: ORCA's source features from a body's own input embedding (offline).

    ofa-source-features --body minilm --corpus lee --max-tokens 32 --out src/minilm_lee.safetensors
    ofa-source-features --body minilm --corpus polarity --labels corpus --out src/minilm_pol.safetensors
    ofa-source-features --body hf:my_vit --corpus npz:data/digits/train.npz --out src/vit_digits.safetensors

Text is tokenised with the body folder's own tokenizer (padded/truncated to ``--max-tokens``) and
passed through the body's embedding block only (word + position + type embeddings + LayerNorm for
the BERT family): no encoder layer, no gradient. Images (``npz:`` files with ``x`` (N, C, H, W))
go through the body's patch embedding. Labels: the corpus's own where it has them (polarity;
npz ``y``), else k-means pseudo-labels on the mean-pooled features (``--labels kmeans``; Lee).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional, Tuple

import numpy as np
import torch

LABEL_MODES = ("auto", "corpus", "kmeans")


def _corpus(name: str) -> Tuple[object, Optional[np.ndarray], dict, str]:
    """(inputs, corpus labels or None, provenance, kind) of `--corpus`."""
    if name.startswith("npz:"):
        from ..data.arrays import read_npz

        x, y = read_npz(name[4:])
        kind = "text" if x.dtype.kind == "U" else "image"
        return x, y, {"file": name[4:]}, kind
    from ..data.arrays_sources import SOURCES

    if name not in ("lee", "polarity"):
        raise SystemExit(f"ofa-source-features: --corpus must be 'lee', 'polarity' or 'npz:PATH', got {name!r}")
    raw = SOURCES[name]()
    return raw.x_train, (raw.y_train if raw.labelled else None), raw.source, "text"


@torch.no_grad()
def embed_text(body, spec: str, texts: List[str], max_tokens: int, batch_size: int):
    from ..models.crossmodal.text_embedder import load_tokenizer

    tok = load_tokenizer(spec)  # the body folder's own; one line for a body without one
    xs, masks = [], []
    for i in range(0, len(texts), batch_size):
        enc = tok(list(texts[i:i + batch_size]), padding="max_length", truncation=True,
                  max_length=max_tokens, return_tensors="pt")
        pad = enc["attention_mask"] == 0
        out = body.embed(enc["input_ids"], pad)
        xs.append(out.embeds)
        masks.append(pad if out.padding_mask is None else out.padding_mask)
    return torch.cat(xs), torch.cat(masks), type(tok).__name__


@torch.no_grad()
def embed_images(body, images: np.ndarray, batch_size: int):
    xs = []
    for i in range(0, len(images), batch_size):
        out = body.embed(torch.as_tensor(images[i:i + batch_size], dtype=torch.float32))
        xs.append(out.embeds)
    x = torch.cat(xs)
    return x, torch.zeros(x.shape[:2], dtype=torch.bool), "patch-embedding"


def _labels(mode: str, corpus_labels: Optional[np.ndarray], pooled: torch.Tensor, k: int, seed: int):
    if mode == "auto":
        mode = "corpus" if corpus_labels is not None else "kmeans"
    if mode == "corpus":
        if corpus_labels is None:
            raise SystemExit("ofa-source-features: --labels corpus, but this corpus has no labels "
                             "(use --labels kmeans)")
        _, ids = np.unique(corpus_labels, return_inverse=True)
        return torch.as_tensor(ids, dtype=torch.long), "corpus"
    from ..metrics.kmeans import pseudo_labels

    labels = torch.as_tensor(pseudo_labels(pooled.numpy(), k=k, seed=seed))
    counts = torch.bincount(labels)
    if (counts < 2).any():  # OTDD needs 2 rows per class: say so now, not at training time
        c = int(torch.nonzero(counts < 2)[0])
        raise SystemExit(f"ofa-source-features: k-means cluster {c} has {int(counts[c])} row; OTDD needs at "
                         f"least 2 per class: lower --kmeans-k ({k}) or raise --max-rows")
    return labels, f"kmeans(k={k}, seed={seed})"


def build_parser() -> argparse.ArgumentParser:
    from ..api import BODY_SPEC_HELP

    ap = argparse.ArgumentParser(prog="ofa-source-features", description=__doc__.splitlines()[0])
    ap.add_argument("--body", default="minilm", help=f"body spec: {BODY_SPEC_HELP}")
    ap.add_argument("--corpus", default="lee", help="'lee' or 'polarity' (gensim test corpora) or 'npz:PATH'")
    ap.add_argument("--max-tokens", type=int, default=32, help="T_src: text padded/truncated to this many tokens")
    ap.add_argument("--max-rows", type=int, default=5000, help="keep at most this many rows (ORCA: 5000)")
    ap.add_argument("--labels", choices=LABEL_MODES, default="auto",
                    help="auto: the corpus's labels if it has them, else k-means pseudo-labels")
    ap.add_argument("--kmeans-k", type=int, default=10, help="pseudo-classes for --labels kmeans")
    ap.add_argument("--seed", type=int, default=0, help="row subsample and k-means seed")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", required=True, help="output .safetensors")
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .. import api
    from ..data.source_features import save_source_features

    torch.manual_seed(args.seed)
    inputs, corpus_labels, provenance, kind = _corpus(args.corpus)
    if len(inputs) > args.max_rows:
        keep = np.sort(np.random.default_rng(args.seed).choice(len(inputs), args.max_rows, replace=False))
        inputs = inputs[keep]
        corpus_labels = None if corpus_labels is None else corpus_labels[keep]
    body = api.load_body(args.body).eval()
    if kind == "text":
        if body.modality != "text":
            raise SystemExit(f"ofa-source-features: corpus {args.corpus!r} is text but body {args.body!r} "
                             f"takes {body.modality}")
        xs, mask, tokenizer = embed_text(body, args.body, [str(t) for t in inputs], args.max_tokens,
                                         args.batch_size)
    else:
        if body.modality != "image":
            raise SystemExit(f"ofa-source-features: {args.corpus!r} holds images but body {args.body!r} "
                             f"takes {body.modality}")
        xs, mask, tokenizer = embed_images(body, inputs, args.batch_size)
    keep = (~mask).unsqueeze(-1).float()
    pooled = (xs * keep).sum(1) / keep.sum(1).clamp_min(1)
    ys, label_kind = _labels(args.labels, corpus_labels, pooled, args.kmeans_k, args.seed)
    meta = {"body": args.body, "body_kind": body.kind, "body_signature": body.signature(),
            "corpus": args.corpus, "corpus_source": provenance, "tokenizer": tokenizer,
            "labels": label_kind, "classes": int(ys.max()) + 1, "seed": args.seed}
    save_source_features(args.out, xs, mask, ys, meta)
    print(json.dumps({"out": args.out, "rows": xs.shape[0], "T": xs.shape[1], "width": xs.shape[2],
                      "labels": label_kind, "classes": meta["classes"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
