"""Shared CLI plumbing: user errors become one message and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from typing import Callable

from peftsent.errors import PeftsentError

#: exit status of a user mistake (argparse uses the same)
USER_ERROR = 2


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: staging directories are removed on the way out


def run_cli(body: Callable[[], int], prog: str) -> int:
    """Run ``body``; print a PeftsentError as ``prog: error: ...`` and return 2; Ctrl-C or SIGTERM returns 130."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notes, not the user's
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return body()
    except PeftsentError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


#: set by the ``peftsent`` dispatcher (peftsent/__main__.py) so a verb's usage reads ``peftsent train``
prog_override: str | None = None


def make_parser(prog: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    """An ArgumentParser whose description and examples keep their line breaks."""
    return argparse.ArgumentParser(
        prog=prog_override or prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {value}")
    return value


def check_out_dir(path) -> None:
    """Raise PeftsentError if an output directory path names an existing file."""
    from pathlib import Path

    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise PeftsentError(f"--out {path} is a file; expected a directory")
