"""The errors peftsent raises for user mistakes.

Every CLI catches :class:`PeftsentError`, prints its message on one screen and
exits with status 2, so a user mistake never ends in a Python traceback.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class PeftsentError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, no network)."""


class RecipeError(PeftsentError):
    """A recipe (or an override) is invalid. The message lists every problem found."""

    def __init__(self, problems: list[str] | str, source: str | None = None, hint: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        head = f"invalid recipe {source}" if source else "invalid recipe"
        if len(self.problems) == 1:
            message = f"{head}: {self.problems[0]}"
        else:
            listed = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{head}: {len(self.problems)} problems\n{listed}"
        super().__init__(message + (f"\n{hint}" if hint else ""))


class DataError(PeftsentError):
    """A dataset cannot be loaded or its rows are invalid (labels, texts, columns)."""


class ModelError(PeftsentError):
    """A model or adapter cannot be found or loaded."""


class RunDirError(PeftsentError):
    """A run directory is missing, unfinished or already exists."""


class MergeError(PeftsentError):
    """A merge cannot be done or its parity check failed (nothing was written)."""


class ExportError(PeftsentError):
    """An export cannot be done or its parity check failed (nothing was written)."""


def did_you_mean(key: str, valid: Iterable[str]) -> str:
    """The hint an unknown-key message ends with: ``did you mean 'x'?`` for a close match, else the valid keys
    (up to 12) or a pointer to the reference."""
    valid = sorted(valid)
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if match:
        return f"did you mean '{match[0]}'?"
    if len(valid) <= 12:
        return f"valid keys: {', '.join(valid)}"
    return "see the recipe reference in README.md"


class ResourceError(PeftsentError):
    """The disk filled up or memory ran out while writing or computing: one line naming the path, the device
    and the space free and needed (see :func:`peftsent.rundir.resource_errors`). Nothing finished-looking is
    left; a staged training run stays resumable."""
