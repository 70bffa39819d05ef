"""Task `refcoco`: RefCOCO / RefCOCO+ / RefCOCOg visual grounding, as OFA trains and evaluates it.

The model reads `' which region does the text " {text} " describe?'` plus the image and writes four
`<bin_i>` tokens (x0, y0, x1, y1). Validation decodes with beam search and reports `score` =
Acc@0.5 (OFA's name, used with `--best-checkpoint-metric score --maximize-best-checkpoint-metric`).
Only sums are logged per batch, so the score is exact over any number of processes.

Decoding is restricted to the bin tokens by default, so every prediction is a box;
`--unconstrained-decoding` decodes over the whole vocabulary as OFA's released evaluation does.
"""

import logging
from dataclasses import dataclass, field

import torch
from fairseq import metrics
from fairseq.tasks import register_task

from ..data.dictionary import first_bin_id
from ..data.grounding_dataset import REFCOCO_SELECTED_COLS, GroundingDataset
from ..evaluation.generation import build_generator
from ..evaluation.grounding import predict_grounding
from ..utils.options import parse_json_dict
from .ofa_task import OFATask, OFATaskConfig

logger = logging.getLogger(__name__)


@dataclass
class RefcocoConfig(OFATaskConfig):
    eval_acc: bool = field(default=False, metadata={"help": "decode boxes during validation and log Acc@0.5 as `score`"})
    eval_args: str = field(
        default='{"beam":5,"min_len":4,"max_len_a":0,"max_len_b":4}',
        metadata={"help": "generation arguments for validation, as a JSON object"},
    )
    unconstrained_decoding: bool = field(
        default=False, metadata={"help": "decode over the whole vocabulary (OFA's released behaviour)"}
    )
    eval_print_samples: bool = field(default=False, metadata={"help": "log one predicted box per validation batch"})


@register_task("refcoco", dataclass=RefcocoConfig)
class RefcocoTask(OFATask):
    cfg: RefcocoConfig

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        path = self.split_path(split, epoch)
        selected = self.cfg.selected_cols or REFCOCO_SELECTED_COLS
        shuffle = split == "train" and not self.cfg.file_order
        self.datasets[split] = GroundingDataset.from_tsv(
            path, self.dictionary, self.text_encoder, selected_cols=selected,
            patch_image_size=self.cfg.patch_image_size, max_image_size=self.cfg.max_image_size,
            num_bins=self.cfg.num_bins, max_src_length=self.cfg.max_src_length,
            skip_bad_rows=self.cfg.skip_bad_rows, shuffle=shuffle, seed=self.cfg.seed if shuffle else 1,
        )
        self.check_rows(split, path, self.datasets[split])

    def bin_range(self) -> tuple[int, int]:
        start = first_bin_id(self.dictionary, self.cfg.num_bins)
        return start, start + self.cfg.num_bins

    def build_grounding_generator(self, models: list, gen_args: dict = None):
        constraint = None if self.cfg.unconstrained_decoding else self.bin_range()
        return build_generator(models, self.dictionary, gen_args, constraint)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if self.cfg.eval_acc:
            self.sequence_generator = self.build_grounding_generator(
                [model], parse_json_dict(self.cfg.eval_args, "--eval-args")
            )
        return model

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if self.cfg.eval_acc:
            with torch.no_grad():
                pred = predict_grounding(self.sequence_generator, [model], sample, self.dictionary,
                                         self.cfg.num_bins, self.cfg.max_image_size)
            logging_output["_acc_sum"] = float(pred.hits.sum())
            logging_output["_acc_cnt"] = int(pred.hits.numel())
            if self.cfg.eval_print_samples:
                logger.info("example: id=%s pred=%s gold=%s iou=%.3f", sample["id"][0], pred.boxes[0].tolist(),
                            sample["region_coords"][0].tolist(), float(pred.true_iou[0]))
        logging_output["_valid_rows"] = int(sample["nsentences"])
        logging_output["_valid_skipped"] = int(sample.get("num_skipped", 0))
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        if any("_valid_rows" in log for log in logging_outputs):  # validation: every row is counted
            metrics.log_scalar_sum("rows", sum(log.get("_valid_rows", 0) for log in logging_outputs))
            metrics.log_scalar_sum("skipped", sum(log.get("_valid_skipped", 0) for log in logging_outputs))
        count = sum(log.get("_acc_cnt", 0) for log in logging_outputs)
        if count > 0:
            metrics.log_scalar("_acc_sum", sum(log.get("_acc_sum", 0) for log in logging_outputs))
            metrics.log_scalar("_acc_cnt", count)
            metrics.log_derived("score", lambda m: round(float(m["_acc_sum"].sum) / max(float(m["_acc_cnt"].sum), 1.0), 4))
