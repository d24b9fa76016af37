"""Shared CLI plumbing: user errors become one message and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from typing import Callable

from peftsent.errors import PeftsentError

#: exit status of a user mistake (argparse uses the same)
USER_ERROR = 2


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: staging directories are removed on the way out


def progress_bars_wanted() -> bool:
    """True if progress bars help: standard error is a terminal. In a log file or a pipe each redraw of a bar
    would be one more line (``\r`` does not erase there), so bars are off, as tqdm's ``disable=None`` does."""
    return sys.stderr.isatty()


def quiet_progress_bars() -> None:
    """Turn every tqdm bar (the Trainer's, datasets', peftsent's) off when standard error is not a terminal, by
    setting ``TQDM_DISABLE=1`` before tqdm is imported (tqdm reads it then). A ``TQDM_DISABLE`` the user set wins."""
    if not progress_bars_wanted():
        os.environ.setdefault("TQDM_DISABLE", "1")


def run_cli(body: Callable[[], int], prog: str) -> int:
    """Run ``body``; print a PeftsentError as ``prog: error: ...`` and return 2; Ctrl-C or SIGTERM returns 130.

    Progress bars are off when standard error is not a terminal (:func:`quiet_progress_bars`)."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecation notes, not the user's
    quiet_progress_bars()
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


def add_data_arguments(parser) -> None:
    """The data options of eval and analyze: the same ``data`` keys a recipe has, for a local file given with
    ``--data`` (or a recipe path as ``--data``: its data section, these options on top). Read by
    :func:`peftsent.recipe.data_section`."""
    parser.add_argument("--text-column", help="text column of a local file (default: text)")
    parser.add_argument("--label-column", help="label column of a local file (default: label)")
    parser.add_argument("--encoding", help="text encoding of a local file, e.g. cp1252 or latin-1 (default: "
                        "utf-8; a byte-order mark is accepted): data.encoding")
    parser.add_argument("--label-map", metavar="YAML", help="raw label -> class name, a YAML mapping, e.g. "
                        "'{pos: positive, neg: negative}': data.label_map")
    parser.add_argument("--labels", metavar="NAMES", help="the ordered class names, comma-separated, e.g. "
                        "negative,neutral,positive: data.labels")


def add_inference_arguments(parser) -> None:
    """The options every scoring command shares (eval, predict): class order, random-weight guard,
    long-review handling and inference precision (see peftsent.loading, peftsent.inference, peftsent.speed)."""
    parser.add_argument("--label-order", help="class names in index order for a model whose id2label is "
                        "LABEL_0, LABEL_1, ..., e.g. negative,positive or negative,neutral,positive")
    parser.add_argument("--allow-random-weights", action="store_true",
                        help="score a model even if some weights are not in its checkpoint (random at every load)")
    parser.add_argument("--long-reviews", default="auto", choices=["auto", "truncate", "window"],
                        help="reviews longer than the max length: auto = as the target was made to score them "
                             "(a run's model.long_reviews, a saved model's tokenizer config; default), truncate = "
                             "one pass over the kept tokens, window = average the logits of overlapping windows")
    parser.add_argument("--stride", type=int, help="window: tokens shared by consecutive windows "
                        "(default: the target's own, else max length / 2)")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="inference precision: auto = the run's own (bfloat16 when it trained under bf16 "
                             "autocast, as in metrics.json) or, for other targets, bfloat16 where the CPU/GPU has "
                             "native bf16; bfloat16 = weights stored in bf16 while predicting, with the agreement "
                             "with float32 reported; float32 = exact")
