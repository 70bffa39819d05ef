"""The OFA encoder as the multimodal body of ``ofa-extract-features``: one encoder, two input kinds.

Spec §10: image features are the encoder's pooled output on the image alone (its ResNet patch
embedding, OFA's image position biases, no text token), text features the pooled output on the
template text alone, through the same encoder; the pooling (``OFABody.pool``: the mean over the
non-pad positions, since OFA has no summary token) and the projection (none: OFA has no joint
space) are the same for both streams.

Text is tokenised as OFA's datasets do (``[bos] + ids(" " + pre_caption(text)) + [eos]``, see
``GroundingDataset.encode_source``) with the checkpoint's own vocabulary, built by the same
``build_text_encoder`` as the OFA tasks: GPT-2 BPE from a ``--bpe-dir`` (official checkpoints) or
a sentencepiece model (``--spm-model``; this project's demo checkpoints). By default both come
from the task options stored in the checkpoint; the options override them. Images: the CoOp crop
with OFA's mean/std (0.5) at the checkpoint's ``patch_image_size``.

    enc = OFAFeatureEncoder("ofa:ckpt/checkpoint_best.pt")            # vocabulary from the checkpoint
    enc = OFAFeatureEncoder("ofa:ofa_base.pt", bpe_dir="ofa_bpe")      # an official file + OFA's BPE
"""

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ...api import load_official_checkpoint, parse_body_spec
from ...data.text import build_text_encoder, pre_caption
from ...data.transforms import OFA_MEAN_STD
from ..bodies.ofa import OFABody
from ..ofa.checkpoint import read_checkpoint
from ..ofa.config import read_attr

#: the OFA task options the text and image inputs depend on, with the tasks' own defaults
_TASK_OPTIONS = ("bpe", "bpe_dir", "spm_model", "num_bins", "code_dict_size", "patch_image_size", "max_src_length")


def task_options(state: Mapping[str, Any]) -> Dict[str, Any]:
    """The task options stored in a checkpoint (``cfg["task"]``, or the legacy ``args``), with the
    OFA tasks' defaults for the ones it lacks (``bpe``/paths: ``None``)."""
    from ...tasks.ofa_task import OFATaskConfig

    fields = OFATaskConfig.__dataclass_fields__
    stored = read_attr(state.get("cfg"), "task") or state.get("args")
    out = {}
    for name in _TASK_OPTIONS:
        value = read_attr(stored, name) if stored is not None else None
        out[name] = value if value is not None else fields[name].default
    return out


def resolve_vocabulary(spec: str, stored: Optional[Mapping[str, Any]], bpe_dir: Optional[str],
                       spm_model: Optional[str]) -> Tuple[str, str]:
    """(kind, path) of the text vocabulary: the option given, else the checkpoint's (``stored``; ``None``
    for a random ``ofa:ARCH``); one line naming the option when there is none."""
    if bpe_dir and spm_model:
        raise ValueError(f"--body {spec}: give --bpe-dir (GPT-2 BPE) or --spm-model (sentencepiece), not both")
    if spm_model:
        return "sentencepiece", spm_model
    if bpe_dir:
        return "gpt2", bpe_dir
    if stored is None:
        raise ValueError(f"--body {spec}: a random OFA encoder has no text vocabulary; give it with --spm-model FILE "
                         "or --bpe-dir DIR (dict.txt, encoder.json, vocab.bpe)")
    kind = stored.get("bpe") or "gpt2"
    option, what = (("--spm-model FILE", "sentencepiece model") if kind == "sentencepiece" else
                    ("--bpe-dir DIR (dict.txt, encoder.json, vocab.bpe)", "GPT-2 BPE folder"))
    path = stored.get("spm_model" if kind == "sentencepiece" else "bpe_dir")
    if not path:
        raise ValueError(f"--body {spec}: no text vocabulary (the checkpoint names no {what}); give it with {option}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--body {spec}: the checkpoint's {what} {path!r} is not there (relative to "
                                f"{os.getcwd()}); give it with {option}")
    return kind, str(path)


class OFAFeatureEncoder:
    """``encode_images([B, 3, s, s]) -> [B, D]``, ``encode_texts(list) -> [B, D]`` through one OFA
    encoder; eval mode, no grad. ``image_size``: ``--image-size`` else the checkpoint's."""

    kinds = ("image", "text")
    mean_std = OFA_MEAN_STD

    def __init__(self, spec: str, layer: int = 0, bpe_dir: Optional[str] = None,
                 spm_model: Optional[str] = None) -> None:
        from ...models.registered import OFAFairseqModel, to_ofa_config
        from ..ofa.archs import ARCH_SIZES

        if layer != 0:
            raise ValueError(f"--layer {layer}: only layer 0 (final features) is implemented for OFA bodies")
        scheme, where, tower = parse_body_spec(spec)
        if scheme != "ofa":
            raise ValueError(f"--body {spec}: an 'ofa:' body spec expected")
        if tower is not None:
            raise ValueError(f"--body {spec}: give the OFA body without '#{tower}'; images and texts are both encoded")
        is_file = where.endswith(".pt") or os.path.sep in where
        if not is_file and where not in ARCH_SIZES:
            raise ValueError(f"--body {spec}: expected a checkpoint file (.pt) or an arch "
                             f"({', '.join(sorted(ARCH_SIZES))})")
        state = read_checkpoint(where) if is_file else {}
        stored = task_options(state)
        kind, vocab = resolve_vocabulary(spec, stored if is_file else None, bpe_dir, spm_model)
        dictionary, self.text_encoder = build_text_encoder(
            kind, bpe_dir=vocab if kind == "gpt2" else None, spm_model=vocab if kind == "sentencepiece" else None,
            num_bins=int(stored["num_bins"]), code_dict_size=int(stored["code_dict_size"]))
        if is_file:
            rows = state["model"].get("encoder.embed_tokens.weight")
            if rows is not None and rows.shape[0] != len(dictionary):
                raise ValueError(f"--body {spec}: the {kind} vocabulary {vocab} gives {len(dictionary)} dictionary "
                                 f"entries (num_bins={stored['num_bins']}, code_dict_size={stored['code_dict_size']}), "
                                 f"the checkpoint embeds {rows.shape[0]}: not its vocabulary")
            del state
            model = load_official_checkpoint(where, dictionary=dictionary)[0]
        else:  # ofa:ARCH, random weights over this vocabulary
            model = OFAFairseqModel.build_from_config(to_ofa_config({"_name": where}, script_flags=True), dictionary)
        self.body = OFABody(model.encoder).eval()
        self.dictionary = dictionary
        self.spec, self.layer, self.kind = spec, layer, kind
        self.max_words = int(stored["max_src_length"])
        self.image_size: Optional[int] = int(stored["patch_image_size"]) if is_file else None
        inputs = [where] if is_file else []
        self._inputs = {str(Path(p).resolve()): [os.path.getsize(p), os.stat(p).st_mtime_ns]
                        for p in inputs + ([vocab] if os.path.isfile(vocab) else [])}

    def identity(self) -> Dict[str, Any]:
        """What a cache must match (spec, layer, encoder shapes); the files' sizes/times key the cache."""
        signature = {"ofa_encoder": self.body.signature(), "text_vocabulary": self.kind,
                     "dictionary": len(self.dictionary)}
        return {"body": self.spec, "layer": self.layer, "signature": signature, "inputs": self._inputs}

    def token_ids(self, texts: List[str]) -> Tuple[Tensor, Tensor]:
        """Right-padded ``[B, L]`` ids ``[bos] + ids(" " + pre_caption(text)) + [eos]`` and the pad mask."""
        d, limit = self.dictionary, self.body.max_text_length - 2
        rows = [[d.bos()] + self.text_encoder.encode(" " + pre_caption(t, self.max_words))[:limit] + [d.eos()]
                for t in texts]
        ids = torch.full((len(rows), max(map(len, rows))), d.pad(), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
        return ids, ids.eq(d.pad())

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        return self._pooled(images)

    @torch.no_grad()
    def encode_texts(self, texts: List[str]) -> Tensor:
        return self._pooled(self.token_ids(texts)[0])

    def sample_body(self, kind: str):
        """The body that encodes samples of either kind (one encoder for both) and its spec."""
        return self.body, self.spec

    def encode_text_samples(self, texts: List[str]) -> Tuple[Tensor, Optional[Tensor]]:
        """Text samples: final features only (partial fine-tuning is not offered for OFA bodies)."""
        return self.encode_texts(texts), None

    def _pooled(self, inputs: Tensor) -> Tensor:
        """The one path of both streams: OFA's embedding of ``inputs`` → encoder → pool → project."""
        inp = self.body.embed(inputs)
        return self.body.project(self.body.pool(self.body(*inp), inp.padding_mask)).float()
