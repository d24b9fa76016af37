"""Turn a recipe's ``train`` section into ``transformers.TrainingArguments``."""

from __future__ import annotations

import functools
from pathlib import Path


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

    from peftsent.recipe import TRAIN_EXTRAS

    kwargs = {**{k: v for k, v in recipe.train.items() if k not in TRAIN_EXTRAS}, **extra, "output_dir": output_dir}
    if kwargs.get("bf16") == "auto":
        kwargs["bf16"] = bf16_available() and not kwargs.get("fp16")  # fp16: true means fp16 instead
    if not torch.cuda.is_available():
        kwargs.setdefault("use_cpu", True)
    return TrainingArguments(**kwargs)
