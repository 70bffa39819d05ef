"""Run fairseq training in a process forked from the test process.

A fresh `fairseq-train` pays seconds of imports (torch, fairseq, hydra); a fork of a process that
already paid them starts at once, so tests can afford many real processes: kill -9 them, or let an
error reach the top of the process as it would in `fairseq-train` (the plugin's excepthook decides
the exit status and what is printed).
"""

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch


def warm_up(argv: list) -> None:
    """Pay once, in the parent, what every forked run would pay again: torch's lazy optimizer
    imports (torch._dynamo) and hydra's first config composition."""
    import fairseq_cli.train  # noqa: F401
    import torch._dynamo  # noqa: F401
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import ofa_ext  # noqa: F401

    convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))


def _child(entry: str, argv: list, out: Path, err: Path, prepare: Optional[Callable[[], None]]) -> None:
    from ofa_ext.utils import errors

    code = 1
    try:
        out_fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        err_fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = os.fdopen(out_fd, "w", buffering=1)
        sys.stderr = os.fdopen(err_fd, "w", buffering=1)
        handler = logging.StreamHandler(sys.stdout)  # as fairseq-train logs: INFO and up, on stdout
        handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s"))
        logging.getLogger().handlers = [handler]
        logging.getLogger().setLevel(logging.INFO)
        torch.set_num_threads(1)
        if prepare is not None:
            prepare()
        sys.argv = [entry] + list(argv)
        if entry == "ofa-train":
            from ofa_ext.cli.train import main

            main(argv)
        else:
            import fairseq_cli.train

            fairseq_cli.train.cli_main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001  what Python does with an uncaught exception: call the hook
        errors._excepthook(sys.__excepthook__, *sys.exc_info())  # exits with 2 for input errors
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_forked(entry: str, argv: list, log: Path, kill_after: Optional[float] = None,
               prepare: Optional[Callable[[], None]] = None) -> int:
    """Exit status of a forked `entry` run (-9 when killed); stdout goes to `log`, stderr to
    `log` + '.err'. `kill_after`: SIGKILL after so many seconds; `prepare` runs first in the child."""
    err = Path(str(log) + ".err")
    pid = os.fork()
    if pid == 0:
        _child(entry, argv, log, err, prepare)
    deadline = None if kill_after is None else time.monotonic() + kill_after
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = None
        time.sleep(0.01)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
