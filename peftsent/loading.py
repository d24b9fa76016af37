"""Load any model target for inference: a run directory, an adapter, a model directory or a hub id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from peftsent.errors import ModelError
from peftsent.rundir import Run, is_finished_run

#: context used for targets that carry no recipe (tokens; capped at the model's usable positions)
DEFAULT_MAX_LENGTH = 256


@dataclass
class Loaded:
    """A model ready for inference (eval mode, float32 unless asked otherwise)."""

    model: object
    """``PreTrainedModel`` or ``PeftModel``; forward gives logits (batch, 2)"""
    tokenizer: object
    kind: str
    """``run`` (adapter or full), ``adapter``, ``model`` (a directory) or ``hub``"""
    max_length: int
    """tokens per input after truncation"""
    run: Run | None = None
    """the run whose recipe gives the defaults (data, max length): the target itself, or the run holding merged/"""


def _is_adapter_dir(path: Path) -> bool:
    from peftsent.methods.bottleneck import is_bottleneck_dir

    return (path / "adapter_config.json").is_file() or is_bottleneck_dir(path)


def _adapter_base(path: Path) -> str:
    from peftsent.methods.bottleneck import is_bottleneck_dir, read_config

    if is_bottleneck_dir(path):
        return read_config(path)[1]
    return json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")


def _attach_adapter(base_location: str, adapter_dir: Path, dtype=None):
    """A fresh full-precision base (never quantized) with the adapter and its trained head."""
    from peft import PeftModel

    from peftsent.methods.bottleneck import is_bottleneck_dir, load_bottleneck
    from peftsent.modeling import load_base_model

    base = load_base_model(base_location, dtype)
    try:
        if is_bottleneck_dir(adapter_dir):
            return load_bottleneck(base, adapter_dir)
        return PeftModel.from_pretrained(base, str(adapter_dir))
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"adapter {adapter_dir} does not fit base model {base_location}: {err}") from None


def _load_classifier(location: str, dtype=None):
    import torch
    from transformers import AutoModelForSequenceClassification

    from peftsent.modeling import quiet_transformers

    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(location, dtype=dtype or torch.float32)
    except (OSError, ValueError) as err:
        raise ModelError(f"model {location} could not be loaded: {err}") from None
    if model.config.num_labels != 2:
        raise ModelError(f"model {location} has {model.config.num_labels} labels; peftsent expects 2 (negative, positive)")
    return model


def _capped(model, max_length: int) -> int:
    """``max_length`` capped at the positions the model can take, less a prompt method's virtual tokens."""
    from peftsent.modeling import max_input_tokens

    peft_config = getattr(model, "peft_config", {}).get("default")
    virtual = int(getattr(peft_config, "num_virtual_tokens", 0) or 0) if peft_config is not None else 0
    return max_input_tokens(model.config, max_length) - virtual


def _load_run(path: Path, dtype=None) -> Loaded:
    from peftsent.modeling import load_tokenizer
    from peftsent.registry import resolve_model

    run = Run(path)
    recipe = run.recipe()
    if run.is_adapter:
        model = _attach_adapter(resolve_model(recipe.model.name).location, run.weights, dtype)
    else:
        model = _load_classifier(str(run.weights), dtype)
    return Loaded(model.eval(), load_tokenizer(str(run.weights)), "run", _capped(model, recipe.model.max_length), run)


def load_target(target: str, dtype=None) -> Loaded:
    """Load ``target`` for inference.

    ``target``: a finished run directory, a peft adapter directory (its
    ``base_model_name_or_path`` is loaded as base), a model directory, or a hub
    id. Raises ModelError/RunDirError if it is none of these or cannot be loaded.
    """
    from peftsent.modeling import load_tokenizer
    from peftsent.registry import resolve_model

    path = Path(target).expanduser()
    if path.is_dir():
        if is_finished_run(path):
            return _load_run(path, dtype)
        parent = Run(path.resolve().parent) if is_finished_run(path.resolve().parent) else None
        recipe = parent.recipe() if parent else None
        max_length = recipe.model.max_length if recipe else DEFAULT_MAX_LENGTH
        if _is_adapter_dir(path):
            # inside a run, the recipe names the base (portable); a bare adapter names it in its config
            base = recipe.model.name if recipe else _adapter_base(path)
            model = _attach_adapter(resolve_model(base).location, path, dtype)
            return Loaded(model.eval(), load_tokenizer(str(path)), "adapter", _capped(model, max_length), parent)
        if (path / "config.json").is_file():
            model = _load_classifier(str(path), dtype)
            return Loaded(model.eval(), load_tokenizer(str(path)), "model", _capped(model, max_length), parent)
        raise ModelError(
            f"{path} is neither a run directory, an adapter directory (adapter_config.json) "
            f"nor a model directory (config.json)"
        )
    source = resolve_model(target)
    model = _load_classifier(source.location, dtype)
    return Loaded(model.eval(), load_tokenizer(source.location), "hub", _capped(model, DEFAULT_MAX_LENGTH))
