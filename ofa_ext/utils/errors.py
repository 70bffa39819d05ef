"""Bad input reaches the user as one line and exit status 2, never as a traceback.

The plugin's own commands wrap their `main` in :func:`cli_entry`; `fairseq-train --user-dir ofa_ext`
(and `ofa-train`) get the same through :func:`install_excepthook`, which the package installs on
import. Only input errors are shortened: exceptions of the plugin's own classes, and `ValueError` /
`OSError` raised by plugin code or about a named file. Anything else keeps Python's traceback, and
``OFA_EXT_DEBUG=1`` shows the traceback of every error.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Callable, Optional

DEBUG_ENV = "OFA_EXT_DEBUG"
EXIT_INPUT_ERROR = 2
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


class InputErrorExit(SystemExit):
    """Exit status 2 for bad input, already reported on stderr; `str()` is the message (for callers
    and tests that call a `main()` in-process)."""

    def __init__(self, message: str):
        super().__init__(EXIT_INPUT_ERROR)
        self.message = message

    def __str__(self) -> str:
        return self.message


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _raised_in_plugin(tb: Optional[TracebackType]) -> bool:
    """True when the innermost frame of `tb` is plugin code."""
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and str(Path(last.tb_frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR)


def is_input_error(exc: BaseException, tb: Optional[TracebackType] = None, anywhere: bool = False) -> bool:
    """Whether `exc` is bad input to report in one line.

    `anywhere`: accept a `ValueError`/`OSError` raised outside the plugin (our own commands, whose
    calls into fairseq only fail on what the user passed); otherwise it must come from plugin code
    or name a file.
    """
    if type(exc).__module__.startswith("ofa_ext"):
        return True
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        return True
    if isinstance(exc, (ValueError, OSError)):
        return anywhere or _raised_in_plugin(tb if tb is not None else exc.__traceback__)
    return False


def one_line(exc: BaseException) -> str:
    """The message of `exc` on one line (DataLoader workers wrap it in their own traceback)."""
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.strerror:  # errno-style: "[Errno 28] ..." -> "FILE: No space left on device"
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: keep the original last line
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    if isinstance(exc, KeyError) and text.startswith("'"):
        text = text.strip("'")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1:
        return f"{lines[0]} [+{len(lines) - 1} more line(s) with {DEBUG_ENV}=1]"
    return lines[0]


def report(prog: str, message: str) -> None:
    """Print `prog: error: message` on stderr (the prefix once, as argparse does)."""
    for given in (f"{prog}: error: ", f"{prog}: "):
        if message.startswith(given):
            message = message[len(given):]
            break
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def cli_entry(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorator for console-script mains: input errors and `SystemExit("text")` become one line on
    stderr and :class:`InputErrorExit` (exit status 2); ``OFA_EXT_DEBUG=1`` re-raises them with their
    traceback. argparse's own usage errors keep their `SystemExit(2)`."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except SystemExit as exc:
                if isinstance(exc.code, str) and not debug_enabled():
                    report(prog, exc.code)
                    raise InputErrorExit(exc.code) from None
                raise
            except Exception as exc:  # noqa: BLE001  (sorted out by is_input_error)
                if debug_enabled() or not is_input_error(exc, anywhere=True):
                    raise
                message = one_line(exc)
                report(prog, message)
                raise InputErrorExit(message) from None

        return run

    return wrap


def _excepthook(previous, exc_type, exc, tb) -> None:
    if debug_enabled() or not is_input_error(exc, tb):
        previous(exc_type, exc, tb)
        return
    try:
        report(os.path.basename(sys.argv[0] or "python"), one_line(exc) + f" ({DEBUG_ENV}=1 shows the traceback)")
        logging.shutdown()
        sys.stdout.flush()
    finally:
        os._exit(EXIT_INPUT_ERROR)  # the interpreter's own exit status for an uncaught exception is 1


def install_excepthook() -> None:
    """Report the plugin's input errors that reach the top of a process (fairseq-train) in one line.

    Installed only over Python's default hook, so IPython, pytest and others keep theirs.
    """
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = functools.partial(_excepthook, sys.__excepthook__)
