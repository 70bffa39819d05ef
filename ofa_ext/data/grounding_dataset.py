"""RefCOCO-style visual grounding samples and batches, identical to OFA's ``RefcocoDataset``.

Each TSV row (``uniq_id, image_b64, text, "x0,y0,x1,y1"`` after ``selected_cols``) becomes

* ``source``  = ``[bos] + encode(prompt.format(pre_caption(text))) + [eos]``
* ``target``  = four ``<bin_k>`` ids of the box + ``[eos]``; ``prev_output_tokens`` = ``[bos]`` + bins
* ``patch_image`` = the image resized to ``s``×``s`` (bicubic) and normalised to [-1, 1]

and :meth:`GroundingDataset.collater` builds OFA's batch dict (refcoco.md §5). There is no data
augmentation, as in OFA's refcoco recipe. Rows that cannot be used raise :class:`BadRowError` naming
the file, line and uniq-id, or, with ``skip_bad_rows``, are dropped from the batch and counted.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from fairseq.data import Dictionary, FairseqDataset, data_utils

from .boxes import bins_to_token_ids, quantise_box
from .text import TextEncoder, pre_caption
from .transforms import PatchTransform, decode_image_b64
from .tsv import BadRowError, TSVReader

logger = logging.getLogger(__name__)

#: OFA's grounding prompt; note the leading space and the spaces inside the quotes.
GROUNDING_PROMPT = ' which region does the text " {} " describe?'
#: OFA's refcoco column order: uniq_id, image_b64, text, region.
REFCOCO_SELECTED_COLS = "0,4,2,3"


def parse_region(region: str) -> List[float]:
    """``"x0,y0,x1,y1"`` → four finite floats (ValueError otherwise)."""
    parts = region.strip().split(",")
    if len(parts) != 4:
        raise ValueError(f"region must be 'x0,y0,x1,y1', got {region!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"region must be four numbers 'x0,y0,x1,y1', got {region!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"region has non-finite values: {region!r}")
    return values


def check_box_in_image(box: Sequence[float], width: int, height: int, tolerance: float = 1.0) -> None:
    """ValueError unless ``x0 < x1``, ``y0 < y1`` and the box lies in the image (± ``tolerance`` px)."""
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"box {list(box)} is empty or reversed (need x0 < x1 and y0 < y1; order is left,top,right,bottom)")
    if x0 < -tolerance or y0 < -tolerance or x1 > width + tolerance or y1 > height + tolerance:
        raise ValueError(f"box {list(box)} lies outside the {width}x{height} image")


class GroundingDataset(FairseqDataset):
    """OFA visual-grounding dataset over a :class:`TSVReader` whose rows are
    ``[uniq_id, image_b64, text, region]``.

    Args:
        reader: the rows (use :meth:`from_tsv` to open a file with OFA's ``selected_cols``).
        dictionary: OFA dictionary (``<bin_*>`` as its last ``num_bins`` entries).
        text_encoder: text → dictionary ids (GPT-2 BPE or sentencepiece).
        patch_image_size: side of the square patch image (OFA: 512; π-Tuning: 480).
        max_image_size: divisor of resized boxes before binning (always 512 in OFA).
        num_bins: number of location tokens.
        max_src_length: maximum number of caption *words* kept by ``pre_caption``.
        prompt: format string wrapping the caption.
        imagenet_default_mean_and_std: ImageNet normalisation instead of (0.5, 0.5).
        skip_bad_rows: drop unusable rows (returns ``None`` from ``__getitem__``; the collater
            leaves them out) instead of raising.
        box_tolerance: pixels a box may stick out of its image before the row counts as bad.
        shuffle, seed: shuffle the order per epoch (off by default: OFA reads in file order).
    """

    def __init__(
        self,
        reader: TSVReader,
        dictionary: Dictionary,
        text_encoder: TextEncoder,
        patch_image_size: int = 512,
        max_image_size: int = 512,
        num_bins: int = 1000,
        max_src_length: int = 80,
        prompt: str = GROUNDING_PROMPT,
        imagenet_default_mean_and_std: bool = False,
        skip_bad_rows: bool = False,
        box_tolerance: float = 1.0,
        shuffle: bool = False,
        seed: int = 1,
    ):
        super().__init__()
        self.reader = reader
        self.dictionary = dictionary
        self.text_encoder = text_encoder
        self.patch_image_size = patch_image_size
        self.max_image_size = max_image_size
        self.num_bins = num_bins
        self.max_src_length = max_src_length
        self.prompt = prompt
        self.skip_bad_rows = skip_bad_rows
        self.box_tolerance = box_tolerance
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 1
        self.transform = PatchTransform(patch_image_size, imagenet_default_mean_and_std)
        self.num_skipped = 0  # per process: DataLoader workers keep their own count
        self._warned: set = set()
        self.bos, self.eos, self.pad = dictionary.bos(), dictionary.eos(), dictionary.pad()
        self._sizes: Optional[np.ndarray] = None
        if "{}" not in prompt:
            raise ValueError(f"prompt must contain '{{}}' where the caption goes, got {prompt!r}")
        ncols = len(reader.selected_cols) if reader.selected_cols is not None else reader.expected_cols
        if len(reader) and ncols != 4:
            raise ValueError(
                f"{reader.path}: a grounding dataset needs 4 selected columns (uniq_id, image, text, region), "
                f"got {ncols}; OFA's refcoco files use selected_cols='{REFCOCO_SELECTED_COLS}'"
            )

    @classmethod
    def from_tsv(
        cls,
        path: Union[str, Path],
        dictionary: Dictionary,
        text_encoder: TextEncoder,
        selected_cols: Union[str, Sequence[int]] = REFCOCO_SELECTED_COLS,
        **kwargs: Any,
    ) -> "GroundingDataset":
        """Open ``path`` (OFA's 5-column layout by default). ``skip_bad_rows`` also drops rows with
        the wrong number of columns."""
        reader = TSVReader(path, selected_cols=selected_cols, skip_bad_rows=kwargs.get("skip_bad_rows", False))
        return cls(reader, dictionary, text_encoder, **kwargs)

    def __len__(self) -> int:
        return len(self.reader)

    # -- one sample ---------------------------------------------------------------------------------
    def encode_source(self, text: str) -> torch.Tensor:
        """``[bos] + ids(prompt(pre_caption(text))) + [eos]`` as int64."""
        caption = pre_caption(text, self.max_src_length)
        ids = self.text_encoder.encode(self.prompt.format(caption))
        return torch.tensor([self.bos] + list(ids) + [self.eos], dtype=torch.long)

    def _make_example(self, index: int) -> Dict[str, Any]:
        uniq_id, image_b64, text, region = self.reader[index]
        try:
            if not pre_caption(text, self.max_src_length):
                raise ValueError("text is empty after pre_caption")
            box = parse_region(region)
            image = decode_image_b64(image_b64)
            check_box_in_image(box, image.width, image.height, self.box_tolerance)
            patch_image, (width, height) = self.transform(image)
            q = quantise_box(box, width, height, self.patch_image_size, self.max_image_size, self.num_bins)
            bins = bins_to_token_ids(q.bins, len(self.dictionary), self.num_bins)
        except ValueError as exc:
            raise BadRowError(f"{self.reader.location(index)} (uniq_id {uniq_id!r}): {exc}") from None
        source = self.encode_source(text)
        return {
            "id": uniq_id,
            "text": text,
            "source": source,
            "patch_image": patch_image,
            "patch_mask": torch.tensor([True]),
            "target": torch.cat([bins, torch.tensor([self.eos])]),
            "prev_output_tokens": torch.cat([torch.tensor([self.bos]), bins]),
            "w_resize_ratio": q.w_resize_ratio,
            "h_resize_ratio": q.h_resize_ratio,
            "region_coord": q.region,
        }

    def __getitem__(self, index: int) -> Optional[Dict[str, Any]]:
        try:
            return self._make_example(index)
        except BadRowError as exc:
            if not self.skip_bad_rows:
                raise BadRowError(f"{exc} (--skip-bad-rows skips and counts such rows)") from None
            self.num_skipped += 1
            if index not in self._warned:  # one warning per row, not one per epoch
                self._warned.add(index)
                logger.warning("skipping bad row: %s", exc)
            return None

    # -- batches ------------------------------------------------------------------------------------
    def collater(self, samples: List[Optional[Dict[str, Any]]]) -> Dict[str, Any]:
        """OFA's refcoco batch; ``{}`` when no usable sample is left (fairseq treats it as a dummy)."""
        skipped = sum(s is None for s in samples)
        samples = [s for s in samples if s is not None]
        if not samples:
            return {}

        def merge(key: str) -> torch.Tensor:
            return data_utils.collate_tokens([s[key] for s in samples], self.pad, eos_idx=self.eos)

        src_tokens = merge("source")
        src_lengths = torch.LongTensor([int(s["source"].ne(self.pad).sum()) for s in samples])
        target = merge("target")
        ntokens = int(sum(int(s["target"].ne(self.pad).sum()) for s in samples))
        batch = {
            "id": np.array([s["id"] for s in samples]),
            "text": [s["text"] for s in samples],
            "nsentences": len(samples),
            "ntokens": ntokens,
            "net_input": {
                "src_tokens": src_tokens,
                "src_lengths": src_lengths,
                "patch_images": torch.stack([s["patch_image"] for s in samples], dim=0),
                "patch_masks": torch.cat([s["patch_mask"] for s in samples]),
                "prev_output_tokens": merge("prev_output_tokens"),
            },
            "target": target,
            "w_resize_ratios": torch.stack([s["w_resize_ratio"] for s in samples], dim=0),
            "h_resize_ratios": torch.stack([s["h_resize_ratio"] for s in samples], dim=0),
            "region_coords": torch.stack([s["region_coord"] for s in samples], dim=0),
        }
        if skipped:
            batch["num_skipped"] = skipped  # rows of this batch left out (--skip-bad-rows)
        return batch

    # -- sizes for fairseq's batching ---------------------------------------------------------------
    @property
    def sizes(self) -> np.ndarray:
        """Source lengths (tokens incl. bos/eos) of every row, computed once from the text column
        only (the image column is not read)."""
        if self._sizes is None:
            text_col = self.reader.selected_cols[2] if self.reader.selected_cols is not None else 2
            sizes = np.empty(len(self), dtype=np.int64)
            for i in range(len(self)):
                try:
                    caption = pre_caption(self.reader.column(i, text_col), self.max_src_length)
                except BadRowError:
                    if not self.skip_bad_rows:
                        raise
                    sizes[i] = 2  # the row is skipped when read; its size hardly matters
                    continue
                sizes[i] = len(self.text_encoder.encode(self.prompt.format(caption))) + 2
            self._sizes = sizes
        return self._sizes

    def num_tokens(self, index: int) -> int:
        return int(max(self.sizes[index], 5))

    def num_tokens_vec(self, indices: np.ndarray) -> np.ndarray:
        return np.maximum(self.sizes[indices], 5)

    def size(self, index: int):
        return (int(self.sizes[index]), 5)

    def ordered_indices(self) -> np.ndarray:
        """File order (OFA's behaviour) unless ``shuffle``: then a permutation per (seed, epoch)."""
        if not self.shuffle:
            return np.arange(len(self), dtype=np.int64)
        with data_utils.numpy_seed(self.seed, self.epoch):
            return np.random.permutation(len(self)).astype(np.int64)

    @property
    def can_reuse_epoch_itr_across_epochs(self) -> bool:
        return not self.shuffle

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def slice_for_rank(self, rank: int, world: int) -> "GroundingDataset":
        """The same dataset over rank ``rank``'s contiguous share of rows (OFA's split)."""
        import copy

        view = copy.copy(self)
        view.reader = self.reader.slice_for_rank(rank, world)
        view._sizes = None
        return view
