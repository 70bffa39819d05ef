"""Run `fairseq-train` (or another fairseq entry point) on N processes through torchrun.

fairseq's own launcher assumes CUDA. This one works on CPU (gloo) and GPU (nccl) alike:

    ofa-launch --nproc 2 -- --user-dir ofa_ext data/ --task refcoco --arch ofa_nano ...
    ofa-launch --nproc 8 --gpu -- ...          # one process per GPU

Each worker reads its rank from torchrun's environment ($RANK, $WORLD_SIZE, $LOCAL_RANK) and
passes fairseq the matching `--distributed-*` flags; CPU runs add `--cpu --distributed-backend gloo
--ddp-backend legacy_ddp`. With --nproc 1 fairseq runs in this process, unchanged.

`--then-pieces "export CKPT OUT"` runs `ofa-pieces` with those arguments in this process once
training has succeeded: a PETL script's export then costs no second interpreter start (~6 s of
torch + fairseq imports on a CPU, as much as 40 small updates).

`--commands FILE` runs several single-process runs in this process, one after the other: each
line of FILE holds the arguments of one `ofa-launch` call (the run scripts write them with
QUEUE=FILE). Every run is the one its own process would make (fairseq's per-run state is reset in
between); they stop at the first failure.
"""

import argparse
import os
import shlex
import subprocess
import sys
from typing import Optional

from ..utils.errors import cli_entry

ENTRY_POINTS = {"train": "fairseq_cli.train", "validate": "fairseq_cli.validate",
                "task_emb": "ofa_ext.cli.task_embedding"}


def worker_flags(env: dict, use_gpu: bool) -> list[str]:
    """fairseq flags for one torchrun worker, from torchrun's environment variables."""
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    except KeyError as missing:
        raise SystemExit(f"ofa-launch worker: environment variable {missing} is not set (run under torchrun)")
    flags = [
        f"--distributed-world-size={world}",
        f"--distributed-rank={rank}",
        "--distributed-init-method=env://",
        "--distributed-no-spawn",
    ]
    if use_gpu:
        flags += [f"--device-id={int(env.get('LOCAL_RANK', 0))}", "--distributed-backend=nccl"]
    else:
        flags += ["--cpu", "--distributed-backend=gloo", "--ddp-backend=legacy_ddp"]
    return flags


def _run_entry(entry: str, args: list[str]) -> None:
    import importlib

    module = importlib.import_module(ENTRY_POINTS[entry])
    sys.argv = [f"fairseq-{entry}"] + args
    module.cli_main()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ofa-launch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nproc", type=int, default=1, help="number of processes (one per GPU with --gpu)")
    parser.add_argument("--gpu", action="store_true", help="use GPUs through nccl (default: CPU through gloo)")
    parser.add_argument("--entry", choices=sorted(ENTRY_POINTS), default="train", help="fairseq entry point")
    parser.add_argument("--master-port", type=int, default=None, help="rendezvous port (default: a free one)")
    parser.add_argument("--then-pieces", metavar="ARGS", default=None,
                        help="after a successful run, `ofa-pieces ARGS` in this process (e.g. 'export CKPT OUT')")
    parser.add_argument("--commands", metavar="FILE", default=None,
                        help="run each line of FILE (the arguments of one single-process ofa-launch call) in this "
                             "process, one after the other: one interpreter start for many small runs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("fairseq_args", nargs=argparse.REMAINDER, help="arguments for fairseq, after --")
    return parser


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@cli_entry("ofa-launch")
def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.commands:
        if args.fairseq_args or args.then_pieces or args.worker:
            raise SystemExit("ofa-launch: --commands FILE takes no other run: put every run in FILE, one per line")
        return run_commands(args.commands)
    fairseq_args = args.fairseq_args[1:] if args.fairseq_args[:1] == ["--"] else args.fairseq_args
    then = _split_then_pieces(args.then_pieces)  # a malformed value fails now, not after the training
    if args.nproc < 1:
        raise SystemExit(f"ofa-launch: --nproc must be >= 1, got {args.nproc}")
    if args.worker:
        _run_entry(args.entry, fairseq_args + worker_flags(dict(os.environ), args.gpu))
        return 0
    if args.nproc == 1:
        _run_entry(args.entry, fairseq_args + ([] if args.gpu else ["--cpu"]))
        return _then_pieces(then)
    command = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc-per-node={args.nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={args.master_port or _free_port()}",
        "-m", "ofa_ext.cli.launch", "--worker", f"--entry={args.entry}",
    ] + (["--gpu"] if args.gpu else []) + ["--"] + fairseq_args
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    status = subprocess.call(command, env=env)
    return status or _then_pieces(then)


def read_commands(path: str) -> list[tuple[int, list[str]]]:
    """(line number, ofa-launch arguments) of each non-blank, non-comment line of ``path``, all checked
    before the first run starts."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise SystemExit(f"ofa-launch: --commands {path}: {exc.strerror}")
    parser, commands = build_parser(), []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"ofa-launch: {path}, line {number}"
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise SystemExit(f"{where}: {exc}; expected ofa-launch arguments as a shell would split them")
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            raise SystemExit(f"{where}: not ofa-launch arguments (see the usage above)") from None
        if args.nproc != 1 or args.commands or args.worker:
            raise SystemExit(f"{where}: only single-process runs can share a process "
                             f"(--nproc 1, no --commands); got {line.strip()[:80]!r}")
        _split_then_pieces(args.then_pieces)
        commands.append((number, argv))
    if not commands:
        raise SystemExit(f"ofa-launch: --commands {path}: no command in the file")
    return commands


def run_commands(path: str) -> int:
    """Every run of ``path`` in turn, in this process; the status of the first that fails, else 0."""
    commands = read_commands(path)
    for k, (number, argv) in enumerate(commands, 1):
        print(f"ofa-launch: run {k} of {len(commands)} ({path}, line {number})", flush=True)
        _reset_run_state()
        try:
            status = main(argv)
        except SystemExit as exc:  # how fairseq and cli_entry end a run; a message means a failure
            status = _exit_status(exc.code)
        if status:
            print(f"ofa-launch: {path}, line {number} failed (exit {status}); the runs after it did not start",
                  file=sys.stderr)
            return status
    return 0


def _exit_status(code) -> int:
    """The status that ``sys.exit(code)`` gives a process: None is 0, a message is printed and is 1."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _reset_run_state() -> None:
    """Forget what fairseq keeps between runs of one process: the best validation score (which
    decides checkpoint_best.pt) and the early-stopping counters live on function attributes."""
    from fairseq import checkpoint_utils
    from fairseq_cli import train

    for fn, names in ((checkpoint_utils.save_checkpoint, ("best",)), (train.should_stop_early, ("best", "num_runs"))):
        for name in names:
            if hasattr(fn, name):
                delattr(fn, name)


def _split_then_pieces(value: Optional[str]) -> Optional[list[str]]:
    if not value:
        return None
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise SystemExit(f"ofa-launch: --then-pieces {value!r}: {exc}; expected ofa-pieces arguments "
                         "as a shell would split them, e.g. 'export CKPT OUT'")


def _then_pieces(arguments: Optional[list[str]]) -> int:
    if not arguments:
        return 0
    from .pieces import main as pieces_main

    return pieces_main(arguments)


if __name__ == "__main__":
    sys.exit(main())
