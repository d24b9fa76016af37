"""The run directory: the one hand-off between train, eval, merge, predict and compare.

::

    runs/<name>/
      recipe.yaml      resolved recipe
      adapter/         peft adapter (safetensors) + tokenizer, for adapter methods, or
      model/           full model (safetensors) + tokenizer, for full fine-tuning
      metrics.json     validation and test metrics, parameter counts, timings, memory
      trainer_state.json (the whole run's history), logs/ (TensorBoard events)
      merged/          written by merge
      eval/            written by eval

A training run lives in the stable hidden sibling ``.<name>.partial/`` until it is complete
(:func:`open_stage` ... :meth:`Stage.finish`): locked with PID and host, holding full
checkpoints (model, optimizer, scheduler, RNG, Trainer state) that ``--resume`` continues,
renamed to ``<name>/`` in one step at the end, so an interrupted command never leaves a
directory that looks finished. Other commands (merge) stage into ``.<name>.partial-<pid>``.
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

from peftsent.errors import PeftsentError, ResourceError, RunDirError
from peftsent.methods import NOT_RESUMABLE
from peftsent.recipe import load_recipe

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
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise
    tmp.replace(path)


# ---------------------------------------------------------------- a full disk, no memory left

#: errno values of a filesystem that cannot take more bytes: no space left, disk quota exceeded
FULL_DISK_ERRNOS = frozenset({28, 122})  # ENOSPC, EDQUOT (Linux)
#: how the writers say it when they do not raise OSError(ENOSPC): safetensors (a Rust I/O error), json, and
#: torch.save's zip writer (RuntimeError "unexpected pos ..." / "file write failed" over "iostream error")
FULL_DISK_WORDS = ("no space left on device", "os error 28", "storagefull", "disk quota exceeded")
TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "iostream error")


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or during (``__cause__`` / ``__context__``)."""
    seen: list[BaseException] = []
    while err is not None and not any(err is e for e in seen):
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def mount_of(path: str | Path) -> tuple[str, str, str]:
    """(device, mount point, filesystem type) of the filesystem holding ``path`` (its nearest existing
    parent), from /proc/mounts; ``("?", "/", "?")`` where that cannot be read."""
    here = Path(path).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    here = here.resolve()
    best = ("?", "/", "?")
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        device, point, fstype = fields[0], fields[1].replace("\\040", " "), fields[2]
        if (here == Path(point) or Path(point) in here.parents) and len(point) >= len(best[1]):
            best = (device, point, fstype)
    return best


def disk_usage(path: str | Path) -> tuple[int, int] | None:
    """(bytes free to this user, bytes in all) of the filesystem holding ``path`` (``os.statvfs``), or None."""
    here = Path(path).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        stat = os.statvfs(here)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize


def human_bytes(n: float) -> str:
    """``n`` bytes as B / KiB / MiB / GiB / TiB, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def is_full_disk(err: BaseException, path: str | Path | None = None) -> bool:
    """True if ``err`` (or an exception in its chain) says the disk is full: OSError ENOSPC/EDQUOT, a
    safetensors or other error naming it, or torch.save's failed write while ``path``'s filesystem is
    (nearly) full (under 1 % or 64 MiB free)."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in FULL_DISK_ERRNOS:
            return True
        if any(word in str(e).lower() for word in FULL_DISK_WORDS):
            return True
    if path is not None and any(word in str(e).lower() for e in _chain(err) for word in TORCH_WRITE_FAILED):
        usage = disk_usage(path)
        return usage is not None and usage[0] < max(64 * 2 ** 20, usage[1] // 100)
    return False


def is_out_of_memory(err: BaseException) -> bool:
    """True if ``err`` (or its chain) is MemoryError, torch.OutOfMemoryError or an allocator's failure."""
    for e in _chain(err):
        if isinstance(e, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(e).__mro__):
            return True
        if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
            return True
    return False


def _memory_where() -> str:
    """Where memory ran out, with what is free: the GPU when torch uses one, else the machine's RAM."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        free, total = torch.cuda.mem_get_info()
        return f"GPU {torch.cuda.get_device_name()} ({human_bytes(free)} free of {human_bytes(total)})"
    try:
        import psutil

        memory = psutil.virtual_memory()
        return f"RAM ({human_bytes(memory.available)} available of {human_bytes(memory.total)})"
    except ImportError:
        return "RAM"


def resource_message(err: BaseException, path: str | Path, doing: str, needed: int | None = None) -> str | None:
    """One line for a full disk or exhausted memory during ``doing`` (e.g. "saving checkpoint-4"), or None
    if ``err`` is neither. ``path``: what was being written (an OSError's own file name wins); ``needed``:
    bytes the write takes, where known. The line names the path, the device (its mount point and
    filesystem, from /proc/mounts) and the space free (``os.statvfs``) and needed."""
    if is_full_disk(err, path):
        named = next((e.filename for e in _chain(err) if isinstance(e, OSError) and e.filename), None)
        where = Path(named or path)
        device, point, fstype = mount_of(where)
        usage = disk_usage(where)
        free = f"{human_bytes(usage[0])} free of {human_bytes(usage[1])}" if usage else "free space unknown"
        need = f", about {human_bytes(needed)} needed" if needed else ""
        return (f"no space left on device {device} ({fstype} mounted at {point}) while {doing}, writing {where}: "
                f"{free}{need}; free space there or write to a larger disk")
    if is_out_of_memory(err):
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        return (f"out of memory in {_memory_where()} while {doing} ({type(err).__name__}: {first}); lower the "
                f"batch size (train.per_device_train_batch_size, --batch-size) or model.max_length, or use a "
                f"machine with more memory")
    return None


@contextlib.contextmanager
def resource_errors(path: str | Path, doing: str, needed=None, cleanup: tuple = ()) -> Iterator[None]:
    """Turn a full disk or exhausted memory inside the block into one :class:`ResourceError` line (see
    :func:`resource_message`), after removing ``cleanup`` (files or directories the block may have left
    half-written, with their ``.tmp`` siblings). ``needed``: bytes, or a function giving them (called only on
    failure). Other exceptions, and PeftsentErrors, pass unchanged."""
    try:
        yield
    except PeftsentError:
        raise
    except Exception as err:
        if not (is_full_disk(err, path) or is_out_of_memory(err)):
            raise
        for item in cleanup:
            for leftover in (Path(item), Path(f"{item}.tmp")):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        raise ResourceError(resource_message(err, path, doing, needed() if callable(needed) else needed)) from None


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if it is absent)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# ---------------------------------------------------------------- the life cycle of a training run

STAGE_SUFFIX = ".partial"
LOCK_FILE = "peftsent.lock"
TRAINER_STATE_FILE = "trainer_state.json"
#: test hook: SIGKILL this process at a named point of the life cycle (step-N, save-N, final-evaluation, rename)
KILL_AT_ENV = "PEFTSENT_TEST_KILL_AT"
#: the signal sent at that point: SIGKILL unless this names another (SIGINT: Ctrl-C)
KILL_SIGNAL_ENV = "PEFTSENT_TEST_KILL_SIGNAL"
#: train keys that change what is written about a run, not what it computes: a resume may change them
OUTPUT_ONLY_TRAIN_KEYS = frozenset({"output_dir", "report_to", "logging_steps", "logging_strategy",
                                    "logging_first_step", "logging_dir", "disable_tqdm", "log_level", "run_name"})


def kill_point(name: str) -> None:
    """SIGKILL this process (or send ``$PEFTSENT_TEST_KILL_SIGNAL``, e.g. SIGINT) if ``$PEFTSENT_TEST_KILL_AT``
    names this point (tests of interrupted runs)."""
    if os.environ.get(KILL_AT_ENV) == name:
        import signal

        os.kill(os.getpid(), getattr(signal, os.environ.get(KILL_SIGNAL_ENV, "SIGKILL")))


def stage_path(final: Path) -> Path:
    """The staging directory of run directory ``final``: ``.<name>.partial`` beside it (same name every time)."""
    final = Path(final)
    return final.parent / f".{final.name}{STAGE_SUFFIX}"


def _this_host() -> str:
    import socket

    return socket.gethostname()


def read_lock(stage: Path) -> dict | None:
    """The lock of a staging directory ({pid, host, started}) or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(stage) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None


def lock_is_live(lock: dict | None) -> bool:
    """True if ``lock`` belongs to a running process: same host and the PID exists, or another host (cannot tell)."""
    if not lock:
        return False
    if lock.get("host") != _this_host():
        return True
    try:
        os.kill(int(lock["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


def _checkpoint_number(path: Path) -> int:
    return int(path.name.rpartition("-")[2]) if path.name.rpartition("-")[2].isdigit() else -1


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed (None if it can): Trainer writes trainer_state.json last, so a
    checkpoint without it was cut short; one with it but without the model, optimizer, scheduler or RNG
    state is damaged."""
    state = checkpoint / TRAINER_STATE_FILE
    if not state.is_file():
        return "incomplete (the process stopped while saving it)"
    try:
        json.loads(state.read_text())
    except ValueError as err:
        return f"damaged ({TRAINER_STATE_FILE} is not valid JSON: {err})"
    missing = [name for name in ("optimizer.pt", "scheduler.pt") if not (checkpoint / name).is_file()]
    if not list(checkpoint.glob("rng_state*.pth")):
        missing.append("rng_state.pth")
    if not list(checkpoint.glob("*.safetensors")) and not list(checkpoint.glob("*.bin")):
        missing.append("model weights (*.safetensors)")
    if missing:
        return f"damaged (missing {', '.join(missing)})"
    return None


def checkpoints(stage: Path) -> list[Path]:
    """``checkpoint-N`` directories of a staging directory, oldest first."""
    return sorted((p for p in Path(stage).glob("checkpoint-*") if p.is_dir()), key=_checkpoint_number)


def _recipe_differences(staged: dict, current: dict) -> list[str]:
    """Dotted keys where two resolved recipes differ, ignoring output-only train keys."""
    out = []
    for section in sorted(set(staged) | set(current)):
        a, b = staged.get(section) or {}, current.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if section == "train" and key in OUTPUT_ONLY_TRAIN_KEYS:
                continue
            if a.get(key) != b.get(key):
                out.append(f"{section}.{key}: {a.get(key)!r} staged, {b.get(key)!r} now")
    return out


@dataclass
class Stage:
    """A run being written: ``path`` (the staging directory) becomes ``final`` when complete.

    ``resume_from_checkpoint``: the checkpoint to continue (transformers' name), or None for a new run;
    ``results_written``: the run's results were complete when it stopped (only the rename is left).
    ``distributed``: accelerate's ``PartialState``; only its main process writes, the others wait.
    """

    final: Path
    path: Path
    resume_from_checkpoint: str | None
    distributed: object
    overwrite: bool = False
    results_written: bool = False

    @property
    def is_main_process(self) -> bool:
        return self.distributed.is_main_process

    def finish(self, write=None) -> Path:
        """Write the results (``write(stage_path)``, main process only; metrics.json last), remove the
        checkpoints and the lock, and rename the stage to the run directory in one step. Returns ``final``."""
        if self.is_main_process:
            if write is not None:
                write(self.path)
            for checkpoint in checkpoints(self.path):
                shutil.rmtree(checkpoint)
            _readable(self.path)
            kill_point("rename")
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            if self.final.exists():  # --overwrite of a finished run (checked before training)
                old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
                self.final.rename(old)
                self.path.rename(self.final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                self.path.rename(self.final)
        self.distributed.wait_for_everyone()
        return self.final

    def abandon(self) -> str:
        """After an error or interrupt: keep the stage if a checkpoint can be resumed (lock released), else
        remove it. Returns what was done, for the message."""
        if not self.is_main_process:
            return ""
        resumable = [c for c in checkpoints(self.path) if checkpoint_problem(c) is None]
        if resumable:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            return (f"{resumable[-1].name} is kept in {self.path}: continue with --resume, "
                    f"or start again with --overwrite")
        shutil.rmtree(self.path, ignore_errors=True)
        return ""


#: the staged run's data fingerprint (see :func:`peftsent.data.data_fingerprint`), checked by --resume
DATA_FINGERPRINT_FILE = "data-fingerprint.txt"


def _data_difference(stage: Path, fingerprint: str | None) -> str | None:
    """Why the staged run's data differs from ``fingerprint`` (the reviews and labels now), or None."""
    staged = stage / DATA_FINGERPRINT_FILE
    if fingerprint is None or not staged.is_file():
        return None
    if staged.read_text().strip() != fingerprint:
        return ("the data changed since the run was staged (the reviews or labels of its splits differ: "
                f"fingerprint {staged.read_text().strip()[:12]} staged, {fingerprint[:12]} now)")
    return None


def _staged_state(stage: Path, recipe, resume: bool, overwrite: bool,
                  fingerprint: str | None = None) -> tuple[str | None, bool]:
    """Read-only checks of a run's staging directory (every process runs them before anyone writes).

    Returns (checkpoint to resume or None, results already written). Raises RunDirError: a live lock,
    a stage without --resume/--overwrite, --resume with nothing staged, another recipe, no complete
    checkpoint or a damaged newest checkpoint. Nothing is deleted here.
    """
    import yaml

    final = recipe.run_dir
    lock = read_lock(stage)
    if stage.exists() and lock_is_live(lock):
        raise RunDirError(f"{stage} is in use by process {lock.get('pid')} on {lock.get('host')} (started "
                          f"{lock.get('started')}); wait for it to finish or stop it, then use --resume")
    if not resume:
        if stage.exists() and not overwrite:
            held = f" (left by process {lock.get('pid')} on {lock.get('host')}, which is gone)" if lock else ""
            newest = [c.name for c in checkpoints(stage) if checkpoint_problem(c) is None]
            what = f"newest complete checkpoint {newest[-1]}" if newest else "no complete checkpoint"
            if (stage / METRICS_FILE).is_file():
                what = "its results complete (only the final rename is left)"
            raise RunDirError(f"an interrupted run of {final} is staged in {stage}{held}, {what}; continue it "
                              f"with --resume, or discard it and start again with --overwrite")
        return None, False
    nothing = "nothing was deleted"

    if recipe.method_name in NOT_RESUMABLE and not (stage / METRICS_FILE).is_file():
        why = NOT_RESUMABLE[recipe.method_name]
        raise RunDirError(f"--resume: {recipe.method_name} runs cannot be continued ({why}); {nothing}; "
                          f"start again with --overwrite")
    if not stage.is_dir():
        done = f"; {final} is already a finished run" if is_finished_run(final) else ""
        raise RunDirError(f"--resume: nothing is staged for {final} (no {stage}){done}; "
                          f"start the run without --resume")
    staged_file = stage / RECIPE_FILE
    if not staged_file.is_file():
        raise RunDirError(f"--resume: {stage} has no {RECIPE_FILE}, so it cannot be checked against this recipe; "
                          f"{nothing}; start again with --overwrite")
    staged, current = yaml.safe_load(staged_file.read_text()) or {}, yaml.safe_load(yaml.safe_dump(recipe.to_dict()))
    if (staged.get("data") or {}).get("labels") is None:  # staged before the label set was saved: the data decides it
        (current.get("data") or {}).pop("labels", None)
        (staged.get("data") or {}).pop("labels", None)
    differences = _recipe_differences(staged, current)
    if differences:
        raise RunDirError("--resume: the staged run was started with another recipe (" + "; ".join(differences)
                          + f"); resume with the same recipe and overrides, or start again with --overwrite; {nothing}")
    changed = _data_difference(stage, fingerprint)
    if changed:
        raise RunDirError(f"--resume: {changed}; resume with the data it started on, or start again with "
                          f"--overwrite; {nothing}")
    if (stage / METRICS_FILE).is_file():
        return None, True  # stopped after writing its results: only the rename is left
    staged = checkpoints(stage)
    problems = [(c, checkpoint_problem(c)) for c in staged]
    complete = [c for c, problem in problems if problem is None]
    if not complete:
        why = "; ".join(f"{c.name} is {p}" for c, p in problems) or "it stopped before its first checkpoint"
        raise RunDirError(f"--resume: nothing can be resumed from {stage}: {why}; {nothing}; "
                          f"start again with --overwrite")
    newest = staged[-1]
    damaged = checkpoint_problem(newest)
    if damaged and damaged.startswith("damaged"):
        raise RunDirError(f"--resume: the newest checkpoint {newest} is {damaged}; {nothing}; remove it to resume "
                          f"from {complete[-1].name}, or start again with --overwrite")
    return str(complete[-1]), False


def open_stage(recipe, distributed, overwrite: bool = False, resume: bool = False,
               fingerprint: str | None = None) -> Stage:
    """Stage a training run of ``recipe``: check (every process), then create or take over the staging
    directory and lock it with PID and host (main process), while the others wait at a barrier.

    ``distributed``: accelerate's ``PartialState`` (``TrainingArguments.distributed_state``). Raises RunDirError
    (see :func:`_staged_state`); the run directory itself is checked by :func:`check_new_run`.
    """
    import datetime

    import yaml

    final = Path(recipe.run_dir)
    stage = stage_path(final)
    checkpoint, written = _staged_state(stage, recipe, resume, overwrite, fingerprint)
    distributed.wait_for_everyone()  # nobody writes before every process has checked
    if distributed.is_main_process:
        if stage.exists() and not resume:
            shutil.rmtree(stage)  # --overwrite of an abandoned stage (a live one was refused above)
        stage.mkdir(parents=True, exist_ok=resume)
        lock = {"pid": os.getpid(), "host": _this_host(),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        write_json(stage / LOCK_FILE, lock)
        staged = yaml.safe_load(yaml.safe_dump(recipe.to_dict()))
        (stage / RECIPE_FILE).write_text(yaml.safe_dump(staged, sort_keys=False))
        if fingerprint is not None:
            (stage / DATA_FINGERPRINT_FILE).write_text(fingerprint + "\n")
        if checkpoint:
            for later in checkpoints(stage):
                if _checkpoint_number(later) > _checkpoint_number(Path(checkpoint)):
                    shutil.rmtree(later)  # cut short while saving; Trainer saves that step again
    distributed.wait_for_everyone()
    return Stage(final, stage, checkpoint, distributed, overwrite, written)


@contextlib.contextmanager
def run_stage(recipe, distributed, overwrite: bool = False, resume: bool = False,
              fingerprint: str | None = None) -> Iterator[Stage]:
    """:func:`open_stage` as a context: on an error or interrupt the stage is kept if it can be resumed
    (the message says so) and removed otherwise."""
    import sys

    stage = open_stage(recipe, distributed, overwrite, resume, fingerprint)
    try:
        yield stage
    except BaseException as err:
        message = _stage_resource_message(stage, err) if isinstance(err, Exception) else None
        kept = stage.abandon()
        if message is not None:  # one line: what filled up, and what is kept to --resume
            raise ResourceError(f"{message}; {kept or 'nothing could be kept: start again once there is room'}") \
                from None
        if kept:
            print(f"peftsent: {kept}", file=sys.stderr)
        raise


def _stage_resource_message(stage: Stage, err: Exception) -> str | None:
    """:func:`resource_message` for a training run that filled its disk or memory, or None. The checkpoint
    being written when the disk filled (newer than the newest complete one) is removed: it cannot be
    resumed, and --resume would refuse a damaged newest checkpoint. A checkpoint's size is the space needed."""
    if not isinstance(err, Exception) or not stage.is_main_process or \
            not (is_full_disk(err, stage.path) or is_out_of_memory(err)):
        return None
    staged = checkpoints(stage.path)
    complete = [c for c in staged if checkpoint_problem(c) is None]
    newest = _checkpoint_number(complete[-1]) if complete else -1
    cut = [c for c in staged if _checkpoint_number(c) > newest]
    weights = [stage.path / d for d in (ADAPTER_DIR, MODEL_DIR) if (stage.path / d).exists()]
    if cut:
        doing, where = f"saving {cut[-1].name} of {stage.final}", cut[-1]
    elif weights:
        doing, where = f"saving the trained model of {stage.final}", weights[0]
    else:
        doing, where = f"training {stage.final}", stage.path
    for checkpoint in cut:
        shutil.rmtree(checkpoint, ignore_errors=True)
    if not complete:
        return resource_message(err, where, doing)
    if cut or not weights:
        needed, what = dir_bytes(complete[-1]), "a checkpoint of this run"
    else:
        needed = sum(f.stat().st_size for f in complete[-1].glob("*.safetensors"))
        what = "the weights, as in its checkpoints"
    return resource_message(err, where, doing, needed).replace(" needed;", f" needed ({what});", 1)


def lifecycle_callback():
    """A Trainer callback marking the life-cycle points the interrupted-run tests stop at."""
    from transformers import TrainerCallback

    class LifeCycle(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            kill_point(f"step-{state.global_step}")

        def on_save(self, args, state, control, **kwargs):
            kill_point(f"save-{state.global_step}")

    return LifeCycle()
