"""What every task checks when fairseq's training loop sets it up, before anything is loaded.

fairseq's own options are mirrored into the task configs (read, never set; fairseq fills them from
the global config) so that a task can see the save folder and the update budget at setup:

- the save folder is repaired after a kill (:func:`~ofa_ext.utils.checkpoint_files.check_training_start`);
- a run whose `checkpoint_last.pt` already reached `--max-update` stops at once. fairseq checks the
  budget only after an update, so rerunning a finished command would train one update more and
  overwrite the finished checkpoints; a rerun (a queue retried, a job restarted after it ended)
  must leave them as they are.
"""

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from ..utils.checkpoint_files import check_training_start, checkpoint_updates
from ..utils.distributed import leave_process_group

logger = logging.getLogger(__name__)


@dataclass
class TrainingRunOptions(FairseqDataclass):
    """fairseq's options a task reads at a training start (interpolations: no command-line flags of their own)."""

    train_subset: str = II("dataset.train_subset")
    save_dir: Optional[str] = II("checkpoint.save_dir")
    restore_file: Optional[str] = II("checkpoint.restore_file")
    finetune_from_model: Optional[str] = II("checkpoint.finetune_from_model")
    checkpoint_suffix: Optional[str] = II("checkpoint.checkpoint_suffix")
    reset_optimizer: bool = II("checkpoint.reset_optimizer")
    max_update: int = II("optimization.max_update")


def option(cfg, name: str, default=None):
    """A fairseq option mirrored into the task config, or `default` outside a fairseq run."""
    try:
        value = getattr(cfg, name, default)
    except Exception:  # an interpolation without the global config (task built on its own)
        return default
    return default if isinstance(value, str) and value.startswith("${") else value


def called_from_fairseq_train() -> bool:
    """Whether fairseq's training `main` is on the call stack (fairseq-train, ofa-train, ofa-launch)."""
    train = sys.modules.get("fairseq_cli.train")
    code = getattr(getattr(train, "main", None), "__code__", None)
    frame = sys._getframe(1)
    while frame is not None and code is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_training_start(kwargs: dict) -> bool:
    """fairseq's training loop setting up its task on the saving rank, not a checkpoint being loaded
    for evaluation nor another command (task embedding) reusing the training options."""
    return not kwargs.get("from_checkpoint") and called_from_fairseq_train() and _rank() == 0


def _finished_at(cfg) -> Optional[int]:
    """The update count of the checkpoint this run would resume from, when it reached --max-update."""
    max_update = option(cfg, "max_update") or 0
    save_dir = option(cfg, "save_dir")
    restore = option(cfg, "restore_file") or "checkpoint_last.pt"
    if max_update <= 0 or not save_dir or restore != "checkpoint_last.pt" or option(cfg, "reset_optimizer"):
        return None  # no budget, or the run does not resume from its own checkpoint_last.pt
    updates = checkpoint_updates(Path(save_dir) / f"checkpoint_last{option(cfg, 'checkpoint_suffix') or ''}.pt")
    return updates if updates is not None and updates >= max_update else None


def _from_rank0(value):
    """Rank 0's `value` on every rank (all ranks must take the same way out)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def prepare_training_start(cfg, kwargs: dict) -> None:
    """At a training start: repair the save folder, check the file the run starts from, and end the
    run (status 0) when its checkpoint_last.pt already finished the update budget."""
    if kwargs.get("from_checkpoint") or not called_from_fairseq_train():
        return
    finished = None
    if _rank() == 0 and option(cfg, "save_dir"):
        check_training_start(option(cfg, "save_dir"), option(cfg, "restore_file"),
                             option(cfg, "finetune_from_model"), option(cfg, "checkpoint_suffix") or "")
        finished = _finished_at(cfg)
    finished = _from_rank0(finished)
    if finished is not None:
        logger.warning("%s/checkpoint_last.pt is at update %d, --max-update is %d: this run has finished, nothing "
                       "to do (raise --max-update to train on, or use another --save-dir)",
                       option(cfg, "save_dir"), finished, option(cfg, "max_update"))
        leave_process_group()  # the barrier fairseq would have run at the end of the run
        raise SystemExit(0)
