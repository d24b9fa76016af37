"""The method catalogue: every value ``method.name`` may take.

Each :class:`MethodSpec` names the peft config class whose fields the recipe's
``method`` section accepts, the defaults peftsent fills in per architecture,
and whether the trained adapter can be merged into the base weights.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from peftsent.registry import ArchSpec


@dataclass(frozen=True)
class MethodSpec:
    """One fine-tuning method."""

    name: str
    summary: str
    config_class: str | None
    """dotted path of the peft config class (``peft.LoraConfig``); None for full fine-tuning"""
    mergeable: bool
    """True if the adapter folds into the base weights (merge writes a standalone model)"""
    defaults: Callable[[ArchSpec], dict] = field(default=lambda arch: {})
    """options filled in when the recipe leaves them out, for a given architecture"""
    fixed: dict = field(default_factory=dict)
    """options peftsent sets itself; a recipe may only repeat the same value"""

    def load_config_class(self):
        """The peft config class, imported on demand (None for ``full``)."""
        if self.config_class is None:
            return None
        module, _, name = self.config_class.rpartition(".")
        return getattr(importlib.import_module(module), name)


def _lora_defaults(arch: ArchSpec) -> dict:
    # all-linear targets and r=8, lora_alpha=16 follow the LoRA paper's (Hu et al. 2021) small ranks
    # and QLoRA's finding (Dettmers et al. 2023) that adapting every linear layer matters most
    return {
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
        "target_modules": list(arch.linear_modules),
        "modules_to_save": list(arch.head_modules),
    }


def _ia3_defaults(arch: ArchSpec) -> dict:
    # targets from the IA3 paper (Liu et al. 2022, "Few-Shot PEFT is Better and Cheaper than ICL"):
    # rescale keys, values and the FFN output
    return {
        "target_modules": list(arch.ia3_target_modules),
        "feedforward_modules": list(arch.ia3_feedforward_modules),
        "modules_to_save": list(arch.head_modules),
    }


_SEQ_CLS = {"task_type": "SEQ_CLS"}

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("full", "full fine-tuning: every weight trains", None, mergeable=False),
        MethodSpec(
            "lora",
            "LoRA low-rank updates (DoRA via use_dora, rsLoRA via use_rslora)",
            "peft.LoraConfig",
            mergeable=True,
            defaults=_lora_defaults,
            fixed=_SEQ_CLS,
        ),
        MethodSpec(
            "ia3",
            "IA3 learned rescaling of keys, values and FFN activations",
            "peft.IA3Config",
            mergeable=True,
            defaults=_ia3_defaults,
            fixed=_SEQ_CLS,
        ),
    )
}


def method_spec(name: str) -> MethodSpec:
    """The catalogue entry for ``name``; KeyError if unknown (recipe validation reports it)."""
    return METHODS[name]


def supported_methods(arch: ArchSpec) -> list[str]:
    """Names of the methods that work with ``arch``, in catalogue order."""
    return [name for name in METHODS if name not in arch.unsupported]
