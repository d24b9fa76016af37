"""The run directory: the one hand-off between train, eval, merge, predict and compare.

::

    runs/<name>/
      recipe.yaml      resolved recipe
      adapter/         peft adapter (safetensors) + tokenizer, for adapter methods, or
      model/           full model (safetensors) + tokenizer, for full fine-tuning
      metrics.json     validation and test metrics, parameter counts, timings, memory
      trainer_state.json, logs/ (TensorBoard events)
      merged/          written by merge
      eval/            written by eval

Directories are written into a hidden ``.<name>.partial-<pid>`` sibling and
renamed when complete, so an interrupted command leaves nothing that looks finished.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from peftsent.errors import RunDirError

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
MERGED_DIR = "merged"
EVAL_DIR = "eval"


@dataclass(frozen=True)
class Run:
    """A finished run directory."""

    path: Path

    @property
    def weights(self) -> Path:
        """``adapter/`` for adapter methods, ``model/`` for full fine-tuning."""
        adapter = self.path / ADAPTER_DIR
        return adapter if adapter.is_dir() else self.path / MODEL_DIR

    @property
    def is_adapter(self) -> bool:
        return (self.path / ADAPTER_DIR).is_dir()

    def recipe(self):
        """The resolved recipe saved by train (re-validated once per file version; a qlora run loads without
        CUDA too). Treat it as read-only: it is shared by every caller in this process."""
        path = self.path / RECIPE_FILE
        return _saved_recipe(str(path.resolve()), path.stat().st_mtime_ns)

    def metrics(self) -> dict:
        return json.loads((self.path / METRICS_FILE).read_text())


@functools.lru_cache(maxsize=32)
def _saved_recipe(path: str, mtime_ns: int):
    from peftsent.recipe import load_recipe

    return load_recipe(path, for_training=False)


def is_finished_run(path: Path) -> bool:
    """True if ``path`` holds a recipe, metrics and weights written by a completed train."""
    path = Path(path)
    return (
        (path / RECIPE_FILE).is_file()
        and (path / METRICS_FILE).is_file()
        and ((path / ADAPTER_DIR).is_dir() or (path / MODEL_DIR).is_dir())
    )


def open_run(path: str | Path) -> Run:
    """A finished run. Raises RunDirError if ``path`` is missing or unfinished."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"run directory not found: {path}")
    if not is_finished_run(path):
        raise RunDirError(
            f"{path} is not a finished run directory (expected {RECIPE_FILE}, {METRICS_FILE} and "
            f"{ADAPTER_DIR}/ or {MODEL_DIR}/); train one with: python -m peftsent.train RECIPE"
        )
    return Run(path)


def check_new_run(path: Path, overwrite: bool) -> None:
    """Refuse a run directory that exists (unless ``overwrite`` and it is a finished run), that is the
    working directory or one of its parents, or that sits below a file. Raises RunDirError."""
    path = Path(path)
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise RunDirError(f"train.output_dir={path} is the working directory or above it; name a new directory, "
                          f"e.g. train.output_dir=runs/NAME")
    blocking = next((p for p in [resolved, *resolved.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise RunDirError(f"train.output_dir={path}: {blocking} is a file, not a directory; choose another path")
    if path.exists():
        if not overwrite:
            raise RunDirError(
                f"run directory {path} already exists; choose another with train.output_dir=runs/NAME "
                f"or replace it with --overwrite"
            )
        if not is_finished_run(path):
            raise RunDirError(f"{path} exists and is not a finished run directory; --overwrite only replaces "
                              f"runs, so nothing was deleted: choose another train.output_dir")


@contextlib.contextmanager
def staging(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden work directory; on success it replaces ``final`` atomically (same filesystem).

    On any exception (Ctrl-C included) the work directory is removed and
    ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _readable(work)
    if final.exists():
        if not overwrite:
            shutil.rmtree(work, ignore_errors=True)
            raise RunDirError(f"{final} appeared while this command ran; nothing was replaced")
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        work.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(final)


def _readable(directory: Path) -> None:
    """Give files written through private temporary files (mode 0600) the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.rglob("*"):
        if path.is_file() and path.stat().st_mode & 0o777 == 0o600:
            path.chmod(0o666 & ~umask)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
