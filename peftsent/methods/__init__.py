"""The method catalogue: every value ``method.name`` may take.

Each :class:`MethodSpec` names the config class whose fields the recipe's
``method`` section accepts (a peft config, or peftsent's own for bottleneck
adapters), the defaults filled in per architecture, whether the trained
adapter can be merged into the base weights, and what else it needs.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from peftsent.registry import ARCHITECTURES, ArchSpec


@dataclass(frozen=True)
class MethodSpec:
    """One fine-tuning method."""

    name: str
    summary: str
    config_class: str | None
    """dotted path of the config class (``peft.LoraConfig``); None for full fine-tuning"""
    mergeable: bool
    """True if the adapter folds into the base weights (merge writes a standalone model)"""
    source: str = ""
    """paper or documentation the method and its defaults come from"""
    defaults: Callable[[ArchSpec], dict] = field(default=lambda arch: {})
    """options filled in when the recipe leaves them out, for a given architecture"""
    fixed: dict = field(default_factory=dict)
    """options peftsent sets itself; a recipe may only repeat the same value"""
    extra_options: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    """options that are not fields of ``config_class``: name -> (type, default)"""
    virtual_tokens_option: str | None = None
    """option holding how many positions the method prepends to every input (prompt methods)"""
    needs_cuda: bool = False

    def load_config_class(self):
        """The config class, imported on demand (None for ``full``)."""
        if self.config_class is None:
            return None
        module, _, name = self.config_class.rpartition(".")
        return getattr(importlib.import_module(module), name)

    @property
    def is_peft(self) -> bool:
        return bool(self.config_class and self.config_class.startswith("peft."))


def _head(arch: ArchSpec) -> dict:
    return {"modules_to_save": "head"}  # symbolic: expanded per model by registry.expand_module_groups


def _lora_defaults(arch: ArchSpec) -> dict:
    # r=8, lora_alpha=16 follow LoRA's small ranks (Hu et al. 2021); every linear layer is adapted
    # because QLoRA (Dettmers et al. 2023) found that matters most
    return {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": "all-linear", **_head(arch)}


def _linear(arch: ArchSpec, **options) -> dict:
    return {**options, "target_modules": "all-linear", **_head(arch)}


def _ia3_defaults(arch: ArchSpec) -> dict:
    # IA3 (Liu et al. 2022, "Few-Shot PEFT is Better and Cheaper than ICL") rescales keys, values and the FFN
    return {"target_modules": list(arch.ia3_target_modules),
            "feedforward_modules": list(arch.ia3_feedforward_modules), **_head(arch)}


def _prompt_defaults(arch: ArchSpec) -> dict:
    return {"num_virtual_tokens": 20, **_head(arch)}


_SEQ_CLS = {"task_type": "SEQ_CLS"}
_QLORA_OPTIONS = {
    "bnb_4bit_quant_type": (str, "nf4"),  # NormalFloat4 (Dettmers et al. 2023)
    "bnb_4bit_use_double_quant": (bool, True),
    "bnb_4bit_compute_dtype": (str, "bfloat16"),
}

CATALOGUE: tuple[MethodSpec, ...] = (
    MethodSpec("full", "every weight trains", None, mergeable=False, source="Devlin et al. 2019 (BERT)"),
    MethodSpec("lora", "low-rank updates of linear layers; DoRA (use_dora), rsLoRA (use_rslora)", "peft.LoraConfig",
               True, "Hu et al. 2021, arXiv:2106.09685", _lora_defaults, _SEQ_CLS),
    MethodSpec("qlora", "LoRA on a 4-bit NF4 base (bitsandbytes, CUDA only)", "peft.LoraConfig", True,
               "Dettmers et al. 2023, arXiv:2305.14314", _lora_defaults, _SEQ_CLS, _QLORA_OPTIONS, needs_cuda=True),
    MethodSpec("ia3", "learned rescaling of keys, values and FFN activations", "peft.IA3Config", True,
               "Liu et al. 2022, arXiv:2205.05638", _ia3_defaults, _SEQ_CLS),
    MethodSpec("adalora", "LoRA with a rank budget reallocated during training", "peft.AdaLoraConfig", True,
               "Zhang et al. 2023, arXiv:2303.10512", lambda a: _linear(a, init_r=12, target_r=8, lora_alpha=16), _SEQ_CLS),
    MethodSpec("loha", "low-rank Hadamard product updates", "peft.LoHaConfig", True,
               "Hyeon-Woo et al. 2022 (FedPara), arXiv:2108.06098", lambda a: _linear(a, r=8, alpha=8), _SEQ_CLS),
    MethodSpec("lokr", "low-rank Kronecker product updates", "peft.LoKrConfig", True,
               "Yeh et al. 2024 (LyCORIS), arXiv:2309.14859", lambda a: _linear(a, r=8, alpha=8), _SEQ_CLS),
    MethodSpec("vera", "shared frozen random low-rank matrices, trained scaling vectors", "peft.VeraConfig", True,
               "Kopiczko et al. 2024, arXiv:2310.11454", lambda a: _linear(a, r=256), _SEQ_CLS),
    MethodSpec("ln_tuning", "only the LayerNorm weights train", "peft.LNTuningConfig", True,
               "Zhao et al. 2024, arXiv:2312.11420",
               lambda a: {"target_modules": list(a.layer_norm_modules), **_head(a)}, _SEQ_CLS),
    MethodSpec("prompt_tuning", "trained soft prompt prepended to the input embeddings", "peft.PromptTuningConfig",
               False, "Lester et al. 2021, arXiv:2104.08691", _prompt_defaults, _SEQ_CLS,
               virtual_tokens_option="num_virtual_tokens"),
    MethodSpec("p_tuning", "soft prompt produced by a small trained encoder (MLP)", "peft.PromptEncoderConfig",
               False, "Liu et al. 2021 (GPT Understands, Too), arXiv:2103.10385",
               lambda a: {**_prompt_defaults(a), "encoder_hidden_size": 128}, _SEQ_CLS,
               virtual_tokens_option="num_virtual_tokens"),
    MethodSpec("prefix_tuning", "trained key/value prefixes in every attention layer", "peft.PrefixTuningConfig",
               False, "Li & Liang 2021, arXiv:2101.00190", _prompt_defaults, _SEQ_CLS),
    MethodSpec("bottleneck", "Houlsby / Pfeiffer bottleneck adapters after attention and FFN",
               "peftsent.methods.bottleneck.BottleneckConfig", False,
               "Houlsby et al. 2019, arXiv:1902.00751; Pfeiffer et al. 2021, arXiv:2005.00247",
               lambda a: {"variant": "pfeiffer", "reduction_factor": 16, "non_linearity": "relu", **_head(a)}),
)

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in CATALOGUE}

#: methods whose checkpoints cannot continue training (``--resume``), and why
NOT_RESUMABLE: dict[str, str] = {
    "p_tuning": "peft saves the prompt encoder's output, not the encoder (MLP) that training continues",
    "adalora": "peft saves the adapter cut to its current ranks and not the rank allocator's importance scores",
}


def method_spec(name: str) -> MethodSpec:
    """The catalogue entry for ``name``; KeyError if unknown (recipe validation reports it)."""
    return METHODS[name]


def _hidden_facts(model_config) -> dict:
    """Sizes prompt methods need, under either naming (BERT ``hidden_size``, DistilBERT ``dim``)."""
    get = lambda *names: next((getattr(model_config, n) for n in names if hasattr(model_config, n)), None)  # noqa: E731
    return {"token_dim": get("hidden_size", "dim"), "num_attention_heads": get("num_attention_heads", "n_heads"),
            "num_layers": get("num_hidden_layers", "n_layers")}


def make_peft_config(recipe, model_config=None, total_steps: int | None = None):
    """The method's config object (a peft config, or BottleneckConfig).

    ``model_config`` fills the sizes prompt methods need; ``total_steps`` (optimizer
    steps of the run) fills AdaLoRA's ``total_step``. Raises ValueError/TypeError
    from the config's own checks.
    """
    spec = method_spec(recipe.method_name)
    config_class = spec.load_config_class()
    options = copy.deepcopy({k: v for k, v in recipe.method.items()
                             if k != "name" and k not in spec.extra_options})  # peft extends lists in place
    if spec.virtual_tokens_option and model_config is not None:
        for key, value in _hidden_facts(model_config).items():
            options.setdefault(key, value)
    if spec.name == "adalora" and options.get("total_step") is None:
        options["total_step"] = total_steps or 1000  # the real count is filled in at train time
    return config_class(**{**options, **spec.fixed})


def supported_methods(arch: ArchSpec) -> list[str]:
    """Names of the methods that work with ``arch``, in catalogue order."""
    return [name for name in METHODS if name not in arch.unsupported]


def capability_table() -> str:
    """Markdown table: which method works with which architecture (and why not), mergeable, source.

    Generated from the registry; README.md embeds it (a test keeps the two equal).
    Regenerate with ``python -m peftsent.methods``.
    """
    archs = list(ARCHITECTURES)
    lines = ["| method | " + " | ".join(archs) + " | mergeable | what it trains | source |",
             "|---|" + "---|" * len(archs) + "---|---|---|"]
    notes: dict[str, int] = {}
    for spec in CATALOGUE:
        cells = []
        for arch in archs:
            reason = ARCHITECTURES[arch].unsupported.get(spec.name)
            if reason:
                mark = notes.setdefault(reason, len(notes) + 1)
                cells.append(f"no [{mark}]")
            else:
                cells.append("CUDA only" if spec.needs_cuda else "yes")
        mergeable = "n/a" if spec.config_class is None else ("yes" if spec.mergeable else "no")
        lines.append(f"| `{spec.name}` | " + " | ".join(cells) + f" | {mergeable} | "
                     f"{spec.summary} | {spec.source} |")
    for reason, mark in notes.items():
        lines.append(f"\n[{mark}] {reason}.")
    return "\n".join(lines)
