"""``ofa-task-embedding``: a task's Fisher embedding from its expert (π-Tuning step 2).

    ofa-task-embedding DATA --user-dir ofa_ext --task refcoco --arch ofa_base [fairseq options ...] \\
        --finetune-from-model foundation.pt --petl-load experts/refcoco.safetensors \\
        --criterion adjust_label_smoothed_cross_entropy --batch-size 4 \\
        --task-emb-file-path results/task_emb/refcoco.safetensors

It takes fairseq's training options (the same command line as the expert's training run), builds the
task and the model (backbone from ``--finetune-from-model`` or ``--restore-file``; the expert's
pieces from ``--petl-load``, or from the ``--restore-file`` checkpoint of the expert's own run), makes
ONE pass over the training split and writes the diagonal Fisher of the pieces with
:func:`ofa_ext.metrics.fisher.save_task_embedding` (safetensors + a ``.json`` copy of the metadata:
task, expert, backbone, split, estimator, sample/batch counts, divisor). No trainer, no optimiser
step and no DDP: the pieces do not change. On several processes (``ofa-launch --nproc N --entry
task_emb -- ...`` or torchrun) every rank takes its shard of the batches and the partial sums are
added (:func:`fisher_diagonal` all-reduces); rank 0 writes the file.

``--fisher-estimator``:
  ``pi_tuning`` (default, π-Tuning's ``task_emb.py``): squared gradient of each mini-batch's summed
  training loss (the criterion, e.g. label-smoothed CE), summed over batches and divided by
  n_batches · batch_size; ``empirical``: per-sample squared gradients of log p(gold | x);
  ``model``: per-sample, with labels drawn from the model (teacher-forced). The per-sample
  estimators respect the criterion's ``--constraint-range``.
``--fisher-mode``: ``eval`` (default: deterministic; dropout/drop-path off) or ``train`` (π-Tuning's
released setting: dropout, drop path and BatchNorm batch statistics active; per-sample estimators
then loop over samples instead of vmap).

The output is a ``.safetensors`` file, or a folder (π-Tuning's ``results/{task}`` layout) that gets
``task_emb.safetensors``. The task name (``--task-emb-name``) defaults to the expert piece file's
``task`` metadata (so that ``ofa-task-similarity`` and ``--interpolation-similarities`` match experts
by name), else the output's name (``results/task_emb/refcoco.safetensors`` or ``results/refcoco/``:
``refcoco``). The header counts the split's rows, the rows used and the rows skipped.

``--task-emb-also DATA EXPERT OUT NAME`` (repeatable) embeds more experts in the same process, one
after the other with the same options: π-Tuning embeds one expert per task, and each process would
otherwise spend seconds importing torch and fairseq for a pass that takes as long on a small model.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch

from ..utils.distributed import leave_process_group
from ..utils.errors import cli_entry

logger = logging.getLogger("ofa_ext.task_embedding")

FISHER_MODES = ("eval", "train")
DEFAULT_FILE = "task_emb.safetensors"


def add_args(parser: argparse.ArgumentParser) -> None:
    from ..metrics.fisher import ESTIMATORS

    g = parser.add_argument_group("task embedding (π-Tuning step 2)")
    g.add_argument("--task-emb-file-path", default=None,
                   help="output: a .safetensors file, or a folder that gets " + DEFAULT_FILE)
    g.add_argument("--fisher-estimator", choices=ESTIMATORS, default="pi_tuning",
                   help="pi_tuning (default: squared batch-loss gradients, as π-Tuning) | empirical | model")
    g.add_argument("--fisher-mode", choices=FISHER_MODES, default="eval",
                   help="eval (default, deterministic) or train (π-Tuning: dropout/drop path/BN statistics on)")
    g.add_argument("--fisher-max-samples", type=int, default=0,
                   help="stop after about this many samples in all (0: the whole split; each of N processes "
                        "takes ceil(n/N))")
    g.add_argument("--fisher-split", default=None, help="split to embed (default: --train-subset)")
    g.add_argument("--task-emb-name", default=None,
                   help="task name recorded in the file (default: the expert piece file's task, else the output "
                        "file's stem / folder's name)")
    g.add_argument("--task-emb-also", nargs=4, action="append", default=[], metavar=("DATA", "EXPERT", "OUT", "NAME"),
                   help="after this embedding, embed another expert with the same options: its data, piece file, "
                        "output and task name ('' = the default name); repeatable. One interpreter start for "
                        "several experts (each file equals that of its own run)")


def output_path(spec: str) -> Path:
    path = Path(spec)
    return path if path.suffix == ".safetensors" else path / DEFAULT_FILE


# ------------------------------------------------------------------------------------ distributed


def init_distributed(cfg: Any) -> tuple[int, int]:
    """(rank, world size); joins a process group when run by ofa-launch/torchrun with N > 1."""
    import torch.distributed as dist

    dt = cfg.distributed_training
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if dt.distributed_init_method:
        world, rank, method = dt.distributed_world_size, dt.distributed_rank, dt.distributed_init_method
    elif env_world > 1:
        world, rank, method = env_world, int(os.environ["RANK"]), "env://"
    else:
        return 0, 1
    if world <= 1:
        return 0, 1
    use_cuda = torch.cuda.is_available() and not cfg.common.cpu
    backend = dt.distributed_backend if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(dt.device_id if dt.distributed_init_method else int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend, init_method=method, world_size=world, rank=rank)
    logger.info("distributed init (rank %d of %d, %s)", rank, world, backend)
    return rank, world


# ---------------------------------------------------------------------------------------- model


def backbone_path(cfg: Any) -> str:
    """The checkpoint to start from: --finetune-from-model, else an explicit --restore-file."""
    ck = cfg.checkpoint
    if ck.finetune_from_model:
        return ck.finetune_from_model
    if ck.restore_file and ck.restore_file != "checkpoint_last.pt":
        return ck.restore_file
    raise ValueError("no backbone: pass --finetune-from-model FOUNDATION.pt (with --petl-load EXPERT.safetensors) "
                     "or --restore-file EXPERT_RUN.pt")


def build(cfg: Any, split: str):
    """(task, model, criterion) with the backbone loaded and the expert's pieces in place."""
    from fairseq import checkpoint_utils, tasks

    from ..models.petl import active_methods, load_pieces
    from ..utils.checkpoint_files import check_checkpoint_file

    task = tasks.setup_task(cfg.task)
    task.load_dataset(split, combine=False, epoch=1)
    if len(task.dataset(split)) == 0:
        raise ValueError(f"split {split!r} of {cfg.task.data} has no rows: nothing to embed")
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    petl_config = getattr(model, "petl_config", None)
    if petl_config is None or not active_methods(petl_config):
        raise ValueError("the model has no PETL pieces: pass the expert with --petl-load EXPERT.safetensors "
                         "(or the expert's PETL options with --restore-file of its run)")
    if getattr(model, "expert_mix", None) is not None:
        raise ValueError("--interpolation-experts: a task embedding is computed from ONE expert (--petl-load)")
    path = backbone_path(cfg)
    check_checkpoint_file(path, "--finetune-from-model" if cfg.checkpoint.finetune_from_model else "--restore-file")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    pieces = set(getattr(model, "petl_piece_names", ()))
    petl_load = getattr(cfg.model, "petl_load", None)
    if not petl_load and pieces and not pieces & set(state["model"]):
        raise ValueError(f"{path} holds no PETL pieces and no --petl-load was given: the embedding would be "
                         "that of freshly initialised pieces; pass --petl-load EXPERT.safetensors")
    model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    if petl_load:
        load_pieces(model, petl_load)  # the expert wins over any pieces stored in the backbone file
    logger.info("backbone %s, expert %s", path, petl_load or f"(pieces of {path})")
    return task, model, criterion, path


# ------------------------------------------------------------------------------------------ data


def batches(cfg: Any, task, model, split: str, rank: int, world: int):
    """This rank's shard of one pass over ``split``, in the dataset's (seeded) order."""
    from fairseq import utils

    return task.get_batch_iterator(
        dataset=task.dataset(split),
        max_tokens=cfg.dataset.max_tokens,
        max_sentences=cfg.dataset.batch_size,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions(), cfg.dataset.max_tokens),
        ignore_invalid_inputs=True,
        required_batch_size_multiple=1,  # a whole-split pass: fairseq's default 8 drops a last smaller batch
        seed=cfg.common.seed,
        num_shards=world,
        shard_id=rank,
        num_workers=cfg.dataset.num_workers,
        epoch=1,
        data_buffer_size=cfg.dataset.data_buffer_size,
    ).next_epoch_itr(shuffle=False)


def limited(itr, max_samples: int, device: torch.device, keys: Optional[List[str]] = None) -> Iterator[Dict]:
    """Non-empty batches on ``device`` until ``max_samples`` (0: all) samples were yielded."""
    from fairseq import utils

    seen = 0
    for sample in itr:
        if not sample or not sample.get("nsentences"):
            continue  # padding batch of an uneven shard
        if keys is not None:
            sample = {k: sample[k] for k in keys}
        yield utils.move_to_cuda(sample, device) if device.type == "cuda" else sample
        seen += int(sample["nsentences"])
        if max_samples and seen >= max_samples:
            break


# ------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> Optional[Path]:
    from fairseq import utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from tqdm import tqdm

    from ..metrics.fisher import (criterion_objective, fisher_diagonal, save_task_embedding, seq2seq_log_likelihood,
                                  teacher_forced_sampler)
    from ..models.petl import active_methods, read_piece_file

    out = output_path(args.task_emb_file_path)
    cfg = convert_namespace_to_omegaconf(args)
    if cfg.common.fp16 or cfg.common.bf16:
        logger.warning("--fp16/--bf16 ignored: the Fisher pass runs in fp32")
    rank, world = init_distributed(cfg)
    utils.set_torch_seed(cfg.common.seed)
    split = args.fisher_split or cfg.dataset.train_subset
    task, model, criterion, backbone = build(cfg, split)
    use_cuda = torch.cuda.is_available() and not cfg.common.cpu
    device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    model.to(device=device, dtype=torch.float32)
    criterion.to(device)

    per_sample = args.fisher_estimator != "pi_tuning"
    kwargs: Dict[str, Any] = {}
    if per_sample:
        allowed_fn = getattr(criterion, "_allowed_mask", None)
        allowed = allowed_fn(len(task.target_dictionary), device) if allowed_fn else None
        objective = seq2seq_log_likelihood(task.target_dictionary.pad(), allowed)
        if args.fisher_estimator == "model":
            kwargs["sample_fn"] = teacher_forced_sampler(task.target_dictionary.pad(), allowed)
            kwargs["generator"] = torch.Generator(device=device).manual_seed(cfg.common.seed + rank)
        kwargs["vectorized"] = args.fisher_mode == "eval"
    else:
        objective = criterion_objective(criterion)

    itr = batches(cfg, task, model, split, rank, world)
    share = -(-args.fisher_max_samples // world) if args.fisher_max_samples else 0
    keys = ["net_input", "target", "nsentences"] if per_sample else None
    name = task_name(args, cfg)
    progress = tqdm(limited(itr, share, device, keys), total=len(itr), disable=rank != 0,
                    desc=f"task embedding {name}", unit="batch", mininterval=1.0)
    try:
        est = fisher_diagonal(model, progress, objective, estimator=args.fisher_estimator, mode=args.fisher_mode,
                              batch_size=cfg.dataset.batch_size, **kwargs)
    except ValueError as e:
        if "zero samples" in str(e):
            raise ValueError(f"no training sample in split {split!r} of {cfg.task.data}: nothing to embed") from None
        raise
    finally:
        progress.close()

    petl_load = getattr(cfg.model, "petl_load", None)
    meta = {
        "task": name,
        "expert": os.path.abspath(petl_load) if petl_load else None,
        "backbone": os.path.abspath(backbone),
        "data": str(cfg.task.data),
        "split": split,
        "arch": cfg.model._name,
        "methods": active_methods(model.petl_config),
        "seed": cfg.common.seed,
        "max_samples": args.fisher_max_samples,
        **est.meta(),
        **row_counts(task.dataset(split), est.n_samples, args.fisher_max_samples),
    }
    if petl_load:
        meta["expert_task"] = read_piece_file(petl_load, tensors=False)[1].get("task")
    written = None
    if rank == 0:
        written = save_task_embedding(out, est.fisher, meta)
        total = sum(float(t.sum()) for t in est.fisher.values())
        skipped = "" if meta["rows_skipped"] is None else f", {meta['rows_skipped']} skipped"
        print(f"task embedding {name}: {len(est.fisher)} tensors, {est.n_samples} samples of {meta['split_rows']} rows"
              f"{skipped} in {est.n_batches} batches ({est.estimator}, {est.mode} mode, {world} process(es)), "
              f"sum {total:.6g} -> {written}")
    leave_process_group()
    return written


def row_counts(dataset, seen: int, max_samples: int) -> Dict[str, Any]:
    """Rows of the split (bad lines included), rows the pass used and, for a whole-split pass, rows
    skipped (bad rows with --skip-bad-rows, rows too long for the model)."""
    total = len(dataset) + int(getattr(getattr(dataset, "reader", None), "num_bad_rows", 0))
    skipped = None if max_samples else total - seen
    if skipped:
        logger.warning("task embedding: %d of %d rows skipped (see the warnings above); the Fisher is over the "
                       "other %d", skipped, total, seen)
    return {"split_rows": total, "rows_seen": seen, "rows_skipped": skipped}


def task_name(args: argparse.Namespace, cfg: Any) -> str:
    from ..models.petl import read_piece_file

    if args.task_emb_name:
        return args.task_emb_name
    petl_load = getattr(cfg.model, "petl_load", None)
    if petl_load:
        stored = read_piece_file(petl_load, tensors=False)[1].get("task")
        if stored:
            return stored
    out = Path(args.task_emb_file_path)  # the name the user gave the output (not a data folder's "data")
    return (out.stem if out.suffix == ".safetensors" else out.name) or "task"


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from fairseq import options

    import ofa_ext  # noqa: F401  (task, model and criterion registrations, before the parser lists them)

    parser = options.get_training_parser()
    add_args(parser)
    args = options.parse_args_and_arch(parser, input_args=argv)
    if not args.task_emb_file_path:
        parser.error("--task-emb-file-path is required (a .safetensors file or a folder for " + DEFAULT_FILE + ")")
    if args.fisher_max_samples < 0:
        parser.error(f"--fisher-max-samples must be >= 0, got {args.fisher_max_samples}")
    outputs = [output_path(args.task_emb_file_path)]
    for data, expert, out, _ in args.task_emb_also:  # checked now, not after the first embeddings
        missing = [p for p in [*data.split(","), expert] if not os.path.exists(p)]
        if missing:
            parser.error(f"--task-emb-also {data} {expert} {out}: {missing[0]} does not exist")
        outputs.append(output_path(out))
    if len(set(outputs)) < len(outputs):
        parser.error(f"--task-emb-also: two embeddings would be written to the same file ({', '.join(map(str, outputs))})")
    return args


@cli_entry("ofa-task-embedding")
def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        stream=sys.stdout)
    args = parse(argv)
    for job in jobs(args):
        run(job)
    return 0


def jobs(args: argparse.Namespace) -> List[argparse.Namespace]:
    """The embedding of the command line, then one per ``--task-emb-also`` (same options otherwise)."""
    more = []
    for data, expert, out, name in args.task_emb_also:
        job = copy.copy(args)
        job.data, job.petl_load, job.task_emb_file_path, job.task_emb_name = data, expert, out, name or None
        more.append(job)
    return [args, *more]


def cli_main() -> None:
    """Entry used by ofa-launch (``--entry task_emb``): arguments from sys.argv."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":  # pragma: no cover
    cli_main()
