"""Turn a recipe's ``train`` section into ``transformers.TrainingArguments``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

#: reviews (or windows) per forward pass when scoring, unless a recipe or ``--batch-size`` says otherwise: the
#: recipe default ``train.per_device_eval_batch_size``, ``eval`` of a non-run target, ``predict``. Window scoring
#: of the 2,500 IMDb test reviews peaked at 539 MiB above its start with 32 against 757 MiB with 64, at the same
#: speed within noise (docs/performance.md).
EVAL_BATCH_SIZE = 32

#: peftsent's own keys in the ``train`` section (not TrainingArguments fields): name -> (type, default)
TRAIN_EXTRAS: dict[str, tuple[Any, Any]] = {
    "early_stopping_patience": (int | None, None),
    # evaluations without improvement before training stops (transformers.EarlyStoppingCallback); None: never stops
    "early_stopping_threshold": (float, 0.0),
    # improvement of metric_for_best_model that counts as one (same units as the metric)
}


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True if the CPU has native bf16 instructions (AVX512_BF16 or AMX), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_available() -> bool:
    """Whether bf16 autocast helps here: a bf16-capable CUDA GPU, or a CPU with bf16 instructions."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def make_training_args(recipe, output_dir: str, **extra):
    """``TrainingArguments`` from ``recipe.train`` with ``output_dir`` replaced (the run's work directory).

    ``bf16: auto`` becomes True where :func:`bf16_available`. Raises ValueError/TypeError
    from TrainingArguments' own checks (the recipe loader reports them).
    """
    import torch
    from transformers import TrainingArguments

    kwargs = {**{k: v for k, v in recipe.train.items() if k not in TRAIN_EXTRAS}, **extra, "output_dir": output_dir}
    if kwargs.get("bf16") == "auto":
        kwargs["bf16"] = bf16_available() and not kwargs.get("fp16")  # fp16: true means fp16 instead
    if not torch.cuda.is_available():
        kwargs.setdefault("use_cpu", True)
    return TrainingArguments(**kwargs)
