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


def _gpu_name() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{torch.cuda.get_device_name()} (compute capability {major}.{minor})"


def hardware_problems(recipe) -> list[str]:
    """What this machine cannot honour in ``recipe.train``, one line per key (key, value found, why, fix), before
    anything is loaded: transformers accepts ``fp16: true`` on a CPU and trains in float32 while the recipe says
    fp16, accepts ``use_cpu: false`` without a GPU, and fails only at the first optimizer step on an optimizer whose
    package or device is missing. ``bf16: auto`` is never a problem (it becomes what the hardware offers)."""
    import torch

    train, problems = recipe.train, []
    cuda = torch.cuda.is_available()  # (the GPU's name only where a message needs it: that initialises CUDA)
    for key in ("fp16", "fp16_full_eval"):
        if train.get(key) is True and not cuda:
            problems.append(f"train.{key}: true needs a CUDA GPU (float16 autocast with loss scaling) and this "
                            f"machine has none: on a CPU transformers would train in float32 while the run records "
                            f"{key}; set train.{key}: false (train.bf16: auto uses bfloat16 where the CPU has it)")
    for key in ("bf16", "bf16_full_eval"):
        if train.get(key) is True and not bf16_available():
            where = (f"this GPU, {_gpu_name()}, has no bfloat16 support (Ampere or newer has)" if cuda else
                     "this CPU has no native bfloat16 instructions (avx512_bf16 or amx_bf16 in /proc/cpuinfo)")
            fix = "train.fp16: true or train.bf16: auto" if cuda else "train.bf16: auto or false (float32)"
            problems.append(f"train.{key}: true, but {where}; set {fix}")
    if train.get("tf32") is True and not (cuda and torch.cuda.get_device_capability()[0] >= 8):
        problems.append(f"train.tf32: true needs an NVIDIA Ampere or newer GPU (TensorFloat-32 matrix units); "
                        f"found {_gpu_name() if cuda else 'no CUDA GPU'}; remove the key or set train.tf32: false")
    if train.get("use_cpu") is False and not cuda:
        problems.append("train.use_cpu: false asks for a GPU and this machine has no CUDA GPU; remove the key "
                        "(peftsent trains on the GPU when there is one, else on the CPU)")
    if not problems:
        problems += _optimizer_problems(recipe, cuda)
    return problems


def _optimizer_problems(recipe, cuda: bool) -> list[str]:
    """``train.optim``: its package is importable, and on a CPU-only machine one step of it runs on a CPU
    tensor (bitsandbytes' 8-bit and paged optimizers need a GPU)."""
    import torch
    from transformers import Trainer

    try:
        args = make_training_args(recipe, output_dir=str(recipe.run_dir))
    except (ValueError, TypeError):
        return []  # the recipe loader reports TrainingArguments' own errors
    optim = getattr(args.optim, "value", args.optim)
    try:
        optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
        if not cuda and optimizer_class.__module__.split(".")[0] in ("torch", "bitsandbytes"):
            parameter = torch.nn.Parameter(torch.zeros(2))
            optimizer = optimizer_class([parameter], **kwargs)
            parameter.grad = torch.ones(2)
            optimizer.step()
    except (ImportError, ValueError, RuntimeError, NotImplementedError, AttributeError, TypeError) as err:
        where = "" if cuda else " on this machine (no CUDA GPU)"
        return [f"train.optim: {optim!r} cannot run{where}: {str(err).strip().splitlines()[0]}; "
                f"use train.optim: adamw_torch (the default) or install what it needs"]
    return []
