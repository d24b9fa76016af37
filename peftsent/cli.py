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


def make_parser(prog: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    """An ArgumentParser whose description and examples keep their line breaks."""
    return argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
