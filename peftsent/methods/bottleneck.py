"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021) for DistilBERT, BERT and RoBERTa.

peft has no bottleneck adapters and AdapterHub's ``adapters`` pins transformers
4.x, so this module implements them. An adapter is a residual MLP

    h -> h + W_up · act(W_down · h),   W_down: (hidden / reduction_factor, hidden)

applied to the output of a layer's projection, before the residual connection
and LayerNorm of the block. ``houlsby`` places one after the attention output
and one after the FFN output of every layer; ``pfeiffer`` only after the FFN.
W_up starts at zero, so a fresh adapter is the identity (Houlsby et al. 2019, section 2.1).

The adapter directory holds ``bottleneck_config.json`` and
``adapter_model.safetensors`` (adapters + head, the only trained tensors).
Adapters are non-linear: they cannot be merged into the base weights.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from peftsent.registry import arch_spec

CONFIG_FILE = "bottleneck_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
VARIANTS = ("houlsby", "pfeiffer")
ACTIVATIONS = ("relu", "gelu", "tanh", "silu")


@dataclass
class BottleneckConfig:
    """Options of ``method.name: bottleneck``."""

    variant: Literal["houlsby", "pfeiffer"] = "pfeiffer"
    """``houlsby``: after attention and FFN of every layer; ``pfeiffer``: after the FFN only"""
    reduction_factor: int = 16
    """hidden size / bottleneck size (Pfeiffer et al. 2021 use 16)"""
    non_linearity: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    modules_to_save: list[str] | None = None
    """modules trained in full beside the adapters (the classification head)"""
    init_weights: bool = True
    """True: W_up = 0, a fresh adapter is the identity; False: random W_up (for tests)"""

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, found {self.variant!r}")
        if self.non_linearity not in ACTIVATIONS:
            raise ValueError(f"non_linearity must be one of {', '.join(ACTIVATIONS)}, found {self.non_linearity!r}")
        if self.reduction_factor < 1:
            raise ValueError(f"reduction_factor must be >= 1, found {self.reduction_factor}")


def _modules():
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        """x: (batch, seq, hidden) -> (batch, seq, hidden), the adapter's residual branch."""

        def __init__(self, hidden: int, reduction_factor: int, non_linearity: str, init_weights: bool):
            super().__init__()
            size = max(1, hidden // reduction_factor)
            self.down = nn.Linear(hidden, size)
            self.act = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}[non_linearity]()
            self.up = nn.Linear(size, hidden)
            nn.init.normal_(self.down.weight, std=1e-2)
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.bias)
            if init_weights:
                nn.init.zeros_(self.up.weight)
            else:
                nn.init.normal_(self.up.weight, std=0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.up(self.act(self.down(x)))

    class AdaptedLinear(nn.Module):
        """A projection followed by its bottleneck adapter: y = base(x); y + adapter(y)."""

        def __init__(self, base_layer: nn.Linear, adapter: Bottleneck):
            super().__init__()
            self.base_layer = base_layer
            self.bottleneck = adapter

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.base_layer(x)
            return y + self.bottleneck(y)

    return Bottleneck, AdaptedLinear


def adapter_sites(model, arch, variant: str) -> list[str]:
    """Full names of the projections that get an adapter, e.g. ``bert.encoder.layer.0.output.dense``."""
    patterns = [arch.ffn_output] if variant == "pfeiffer" else [arch.attention_output, arch.ffn_output]
    regex = re.compile(r"(?:.*\.)?(?:" + "|".join(patterns) + r")")
    return [name for name, _ in model.named_modules() if regex.fullmatch(name)]


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def add_bottleneck_adapters(model, config: BottleneckConfig, arch):
    """Insert adapters in place, freeze everything but adapters and ``modules_to_save``; returns ``model``.

    The model stays a ``transformers`` model, so ``Trainer`` handles it as any other.
    Raises ValueError if no adapter site matches the architecture.
    """
    Bottleneck, AdaptedLinear = _modules()
    sites = adapter_sites(model, arch, config.variant)
    if not sites:
        raise ValueError(f"no {config.variant} adapter sites found in this {arch.model_type} model")
    for name in sites:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        adapter = Bottleneck(base.out_features, config.reduction_factor, config.non_linearity, config.init_weights)
        setattr(parent, child, AdaptedLinear(base, adapter.to(base.weight.dtype)))
    saved = config.modules_to_save or []
    trained_prefixes = [n for n, _ in model.named_modules() if any(_matches(n, m) for m in saved)]
    for name, param in model.named_parameters():
        param.requires_grad = ".bottleneck." in name or any(name.startswith(p + ".") for p in trained_prefixes)
    model.bottleneck_config = config
    return model


def save_bottleneck(model, directory: Path, base_model: str) -> None:
    """Write ``bottleneck_config.json`` and the trained tensors (adapters + head) as safetensors."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trained = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trained, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {**asdict(model.bottleneck_config), "base_model_name_or_path": base_model,
              "model_type": model.config.model_type}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def is_bottleneck_dir(directory: Path) -> bool:
    return (Path(directory) / CONFIG_FILE).is_file()


def read_config(directory: Path) -> tuple[BottleneckConfig, str]:
    """(config, base_model_name_or_path) of a saved adapter directory."""
    data = json.loads((Path(directory) / CONFIG_FILE).read_text())
    base = data.pop("base_model_name_or_path")
    data.pop("model_type", None)
    return BottleneckConfig(**data), base


def load_bottleneck(base_model, directory: Path):
    """Insert the saved adapters into ``base_model`` and load their trained tensors (and the head).

    Raises ValueError if a saved tensor has no place in the model.
    """
    from safetensors.torch import load_file

    config, _ = read_config(directory)
    model = add_bottleneck_adapters(base_model, config, arch_spec(base_model.config.model_type))
    tensors = load_file(str(Path(directory) / WEIGHTS_FILE))
    missing = model.load_state_dict(tensors, strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"saved tensors without a place in the model: {missing.unexpected_keys[:5]}")
    return model
