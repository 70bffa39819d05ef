"""What every OFA task shares: the vocabulary, the text encoder and where split files live.

Config names are OFA's (`--bpe-dir`, `--selected-cols`, `--patch-image-size`, ...). `data` is either
a directory holding `{split}.tsv` files, or OFA's comma list of files: split `train` cycles over all
but the last file (one file per epoch), every other split reads the last one.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fairseq.tasks import FairseqTask
from omegaconf import II

from ..data.text import build_text_encoder
from .training_start import TrainingRunOptions, is_training_start, option, prepare_training_start

logger = logging.getLogger(__name__)

TEXT_ENCODERS = ("gpt2", "sentencepiece")


@dataclass
class OFATaskConfig(TrainingRunOptions):
    data: Optional[str] = field(
        default=None, metadata={"help": "a directory with {split}.tsv files, or OFA's comma list of TSV files"}
    )
    selected_cols: Optional[str] = field(
        default=None, metadata={"help": "comma list of TSV columns to read, in the order the dataset expects"}
    )
    # Optional because fairseq has a global --bpe of its own that fills this field with null when unset.
    bpe: Optional[str] = field(default=None, metadata={"help": "text encoder: gpt2 (OFA's BPE, default) or sentencepiece"})
    bpe_dir: Optional[str] = field(
        default=None, metadata={"help": "folder with OFA's dict.txt, encoder.json, vocab.bpe (for --bpe gpt2)"}
    )
    spm_model: Optional[str] = field(default=None, metadata={"help": "sentencepiece .model file (for --bpe sentencepiece)"})
    max_src_length: int = field(default=80, metadata={"help": "maximum number of words of the input text"})
    max_tgt_length: int = field(default=20, metadata={"help": "maximum number of target tokens"})
    num_bins: int = field(default=1000, metadata={"help": "number of location bins <bin_i>"})
    code_dict_size: int = field(default=8192, metadata={"help": "number of image-code tokens <code_i>"})
    patch_image_size: int = field(default=480, metadata={"help": "images are resized to this square size"})
    max_image_size: int = field(default=512, metadata={"help": "boxes are divided by this size before binning"})
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "skip (and count) malformed TSV rows instead of stopping with an error"}
    )
    file_order: bool = field(
        default=False,
        metadata={"help": "read training batches in file order, as OFA does (default: a new permutation of the "
                          "rows every epoch, from --seed); also the order of the task-embedding pass"},
    )
    # fairseq fills this from --seed (common.seed): the data order follows the run's seed.
    seed: int = II("common.seed")


def check_data_folder(data: Optional[str]) -> None:
    """A DATA that is neither a comma list nor a .tsv file must be an existing folder."""
    if data and "," not in str(data) and Path(data).suffix != ".tsv" and not Path(data).exists():
        raise FileNotFoundError(f"data folder not found: {data} (DATA must be a folder of {{split}}.tsv files "
                                "or a comma list of TSV files)")


class OFATask(FairseqTask):
    """Base task: one dictionary shared by source and target, built from the configured vocabulary."""

    def __init__(self, cfg: OFATaskConfig, dictionary, text_encoder):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.text_encoder = text_encoder

    @classmethod
    def setup_task(cls, cfg: OFATaskConfig, **kwargs):
        kind = cfg.bpe or "gpt2"
        if kind not in TEXT_ENCODERS:
            raise ValueError(f"--bpe must be one of {TEXT_ENCODERS}, got {kind!r}")
        dictionary, text_encoder = build_text_encoder(
            kind=kind, bpe_dir=cfg.bpe_dir, spm_model=cfg.spm_model,
            num_bins=cfg.num_bins, code_dict_size=cfg.code_dict_size,
        )
        if is_training_start(kwargs):
            check_data_folder(cfg.data)
        prepare_training_start(cfg, kwargs)
        return cls(cfg, dictionary, text_encoder)

    def get_batch_iterator(self, dataset, *args, **kwargs):
        """Every split but the training one is read whole: fairseq's `--required-batch-size-multiple`
        (default 8) drops a last batch of another size, which would leave validation rows unseen.
        With --file-order the training batches also stay in file order (fairseq shuffles the order
        of the batches every epoch, on top of the dataset's own order)."""
        if dataset is not self.datasets.get(option(self.cfg, "train_subset", "train")):
            if len(args) >= 5:  # positional required_batch_size_multiple (fairseq passes keywords)
                args = args[:4] + (1,) + args[5:]
            elif kwargs.get("required_batch_size_multiple", 1) != 1:
                logger.info("whole-split pass: required_batch_size_multiple %s -> 1 so that no row is dropped",
                            kwargs["required_batch_size_multiple"])
                kwargs["required_batch_size_multiple"] = 1
            return super().get_batch_iterator(dataset, *args, **kwargs)
        itr = super().get_batch_iterator(dataset, *args, **kwargs)
        if len(itr) == 0 and len(dataset) > 0:  # would loop over empty epochs forever
            multiple = kwargs.get("required_batch_size_multiple", args[4] if len(args) >= 5 else 1)
            where = getattr(getattr(dataset, "reader", None), "path", "the training split")
            raise ValueError(
                f"{where}: its {len(dataset)} row(s) make no training batch that fairseq keeps (it drops a last "
                f"batch whose size is not a multiple of --required-batch-size-multiple {multiple}); pass "
                "--required-batch-size-multiple 1 or a smaller --batch-size"
            )
        if getattr(self.cfg, "file_order", False):
            itr.next_epoch_itr = _without_shuffle(itr.next_epoch_itr)
        return itr

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def split_path(self, split: str, epoch: int = 1) -> Path:
        """The TSV file that serves `split` at `epoch` (see the module docstring)."""
        if not self.cfg.data:
            raise ValueError("no data given: pass a directory of {split}.tsv files or a comma list of TSV files")
        data = Path(self.cfg.data)
        check_data_folder(self.cfg.data)
        if data.is_dir():
            path = data / f"{split}.tsv"
        else:
            paths = [Path(p) for p in str(self.cfg.data).split(",") if p]
            if split == "train" and len(paths) > 1:
                path = paths[(epoch - 1) % (len(paths) - 1)]
            else:
                path = paths[-1]
        if not path.is_file():
            raise FileNotFoundError(f"data file for split {split!r} not found: {path} (from --data {self.cfg.data})")
        return path

    def check_rows(self, split: str, path: Path, dataset) -> None:
        """Log how many rows `split` has (and how many lines were skipped); an empty split is an error."""
        bad = int(getattr(getattr(dataset, "reader", None), "num_bad_rows", 0))
        skipped = f", {bad} bad line(s) skipped" if bad else ""
        if len(dataset) == 0:
            raise ValueError(f"{path}: split {split!r} has no rows (the file is empty or blank{skipped}); "
                             "expected at least one tab-separated row")
        logger.info("%s: split %s, %d rows from %s%s", self.__class__.__name__, split, len(dataset), path, skipped)

    def max_positions(self):
        return None


def _without_shuffle(next_epoch_itr):
    def call(shuffle: bool = True, **kwargs):
        return next_epoch_itr(shuffle=False, **kwargs)

    return call
