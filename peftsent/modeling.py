"""Build the model a recipe asks for: base encoder + classification head, wrapped by its method.

Also the parameter report (adapter / head / frozen) and the checks that every
requested ``target_modules`` name matches a module of the model.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass

from peftsent.errors import ModelError, RecipeError
from peftsent.methods import method_spec
from peftsent.registry import ID2LABEL, LABEL2ID, ModelSource, arch_spec, resolve_model


@dataclass(frozen=True)
class ParameterReport:
    """Parameter counts of a model as fine-tuned (element counts, not bytes)."""

    adapter: int
    """trainable parameters added by the method (LoRA A/B, IA3 vectors, ...)"""
    head: int
    """trainable head parameters (``modules_to_save``, or the head modules under full fine-tuning)"""
    backbone_trainable: int
    """trainable weights of the pretrained encoder (full fine-tuning only)"""
    frozen: int
    """frozen parameters (the pretrained encoder under adapter methods)"""

    @property
    def trainable(self) -> int:
        return self.adapter + self.head + self.backbone_trainable

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    def to_dict(self) -> dict:
        share = 100.0 * self.trainable / self.total if self.total else 0.0
        return {**asdict(self), "trainable": self.trainable, "total": self.total, "trainable_percent": share}


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report (the new head is expected) while loading a model."""
    from transformers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(previous)


def load_tokenizer(location: str):
    """The tokenizer of a model directory or hub id. Raises ModelError if it has none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise ModelError(f"no tokenizer could be loaded from {location}: {err}") from None


def load_base_model(location: str, dtype=None, **kwargs):
    """``AutoModelForSequenceClassification`` with 2 labels and id2label = negative/positive.

    ``dtype`` (e.g. ``torch.float32``) defaults to float32; ``kwargs`` go to
    ``from_pretrained`` (quantization_config, device_map). Raises ModelError if loading fails.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        with quiet_transformers():
            return AutoModelForSequenceClassification.from_pretrained(
                location, num_labels=len(ID2LABEL), id2label=ID2LABEL, label2id=LABEL2ID,
                dtype=dtype or torch.float32, **kwargs,
            )
    except (OSError, ValueError) as err:
        raise ModelError(f"model {location} could not be loaded: {err}") from None


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


def virtual_tokens(method: dict) -> int:
    """Positions a method prepends to every input (prompt and p-tuning), else 0."""
    option = method_spec(method["name"]).virtual_tokens_option
    return int(method.get(option) or 0) if option else 0


def max_input_tokens(model_config, requested: int, method: dict | None = None) -> int:
    """Tokens an input may have: ``requested``, capped at the usable positions less the virtual tokens."""
    from peftsent.registry import ARCHITECTURES, usable_positions

    if model_config.model_type in ARCHITECTURES:
        limit = usable_positions(model_config)
    else:
        limit = int(getattr(model_config, "max_position_embeddings", requested))
    return min(requested, limit - (virtual_tokens(method) if method else 0))


def _matches(module_name: str, target: str) -> bool:
    return module_name == target or module_name.endswith("." + target)


def check_target_modules(model, recipe) -> None:
    """Every name in ``target_modules`` / ``modules_to_save`` must match a module of ``model``.

    peft itself only fails when no name matches; a typo in one of six names
    would silently train less. Raises RecipeError naming, per key, the names that match
    nothing, the model's own names, and the symbolic form that follows any model.
    """
    names = [name for name, _ in model.named_modules()]
    problems = []
    for key in ("target_modules", "feedforward_modules", "modules_to_save"):
        wanted = recipe.method.get(key)
        if isinstance(wanted, str):
            continue  # a regex: peft resolves it
        unmatched = [t for t in wanted or [] if not any(_matches(name, t) for name in names)]
        if unmatched:
            quoted = ", ".join(f"'{t}'" for t in unmatched)
            verb = "matches" if len(unmatched) == 1 else "match"
            problems.append(f"method.{key}: {quoted} {verb} no module of this {recipe.model_type} model; "
                            f"{_module_names_hint(key, recipe)}")
    if problems:
        raise RecipeError(problems, recipe.source)


def _module_names_hint(key: str, recipe) -> str:
    """The model's own names for ``method.<key>`` and the recipe form that follows whichever model is loaded."""
    from peftsent.registry import head_to_save

    arch = arch_spec(recipe.model_type)
    if key == "modules_to_save":
        head = head_to_save(recipe.model.name, recipe.model_type)
        return f"its head modules are: {', '.join(head)}; or write method.modules_to_save=head"
    if recipe.method_name == "ln_tuning":
        return (f"its LayerNorm modules are: {', '.join(arch.layer_norm_modules)}; or remove "
                f"method.{key} to get every LayerNorm of whichever model is loaded")
    if key == "feedforward_modules":
        return (f"its linear modules are: {', '.join(arch.linear_modules)}; or remove method.{key} "
                f"to get the default of whichever model is loaded")
    return (f"its linear modules are: {', '.join(arch.linear_modules)}; or write method.{key}=all-linear "
            f"(or method.{key}=attention: {', '.join(arch.attention_modules)})")


def check_method_on_meta(recipe, source: ModelSource) -> None:
    """Apply the method to a weightless (meta-device) copy of the model: no weights load, no compute.

    Catches what peft and the config only reject when the model is built (``r: 0``, a dropout of 1.5,
    targets that match nothing, more virtual tokens than positions). Raises RecipeError.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    spec = method_spec(recipe.method_name)
    try:
        config = AutoConfig.from_pretrained(source.location, num_labels=len(ID2LABEL))
        with torch.device("meta"), quiet_transformers():
            model = AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise RecipeError(f"model.name: {source.name} has an invalid config: {err}", recipe.source) from None
    room = max_input_tokens(config, recipe.model.max_length, recipe.method)
    if room < 8:
        raise RecipeError(f"method: {virtual_tokens(recipe.method)} virtual tokens leave {room} positions of "
                          f"the model's {max_input_tokens(config, 10**9)} for the review; lower num_virtual_tokens",
                          recipe.source)
    if spec.config_class is None:
        return
    check_target_modules(model, recipe)
    if spec.needs_cuda:
        return
    try:
        with torch.device("meta"), quiet_transformers():
            wrap_model(model, recipe, total_steps=1000)
    except RecipeError:
        raise
    except Exception as err:  # peft's own checks: ValueError, NoMatchingPeftModuleError, ZeroDivisionError, ...
        raise RecipeError(f"method: {recipe.method_name} rejects these options: {type(err).__name__}: {err}",
                          recipe.source) from None


def _is_head(name: str, head_modules) -> bool:
    return any(name.startswith(h + ".") or f".{h}." in name for h in head_modules)


def parameter_report(model, head_modules, full: bool = False) -> ParameterReport:
    """Count adapter, head, trainable-backbone and frozen parameters of a (peft) model.

    ``head_modules``: names of the head (``modules_to_save``); ``full``: full fine-tuning
    (trainable encoder weights count as backbone, not adapter). peft keeps a frozen
    ``original_module`` beside each trained copy; those duplicates are not counted.
    """
    counts = {"adapter": 0, "head": 0, "backbone_trainable": 0, "frozen": 0}
    for name, param in model.named_parameters():
        if ".original_module." in name:
            continue
        n = param.numel()
        if not param.requires_grad:
            counts["frozen"] += n
        elif ".modules_to_save." in name or _is_head(name, head_modules):
            counts["head"] += n
        elif full:
            counts["backbone_trainable"] += n
        else:
            counts["adapter"] += n
    return ParameterReport(**counts)


def wrap_model(model, recipe, total_steps: int | None = None):
    """Apply the recipe's method to a loaded base model (full: unchanged, every weight trains)."""
    spec = method_spec(recipe.method_name)
    if spec.config_class is None:
        return model
    check_target_modules(model, recipe)
    config = make_peft_config(recipe, model.config, total_steps)
    if not spec.is_peft:
        from peftsent.methods.bottleneck import add_bottleneck_adapters

        return add_bottleneck_adapters(model, config, arch_spec(recipe.model_type))
    from peft import get_peft_model

    if spec.needs_cuda:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, config)


def quantization_config(recipe):
    """bitsandbytes 4-bit config of a qlora recipe; the head modules stay in full precision."""
    import torch
    from transformers import BitsAndBytesConfig

    method = recipe.method
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=method.get("bnb_4bit_quant_type", "nf4"),
        bnb_4bit_use_double_quant=method.get("bnb_4bit_use_double_quant", True),
        bnb_4bit_compute_dtype=getattr(torch, method.get("bnb_4bit_compute_dtype", "bfloat16")),
        llm_int8_skip_modules=list(method.get("modules_to_save") or []),
    )


def merge_adapter(peft_model):
    """Fold the active adapter into the base weights; returns the plain ``transformers`` model.

    The trained ``modules_to_save`` copies are put in place first: peft's generic
    unloading (IA3 and others) assumes every wrapped module has ``.weight``,
    which RoBERTa's two-layer classification head does not.
    """
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(peft_model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent_name, _, child = name.rpartition(".")
            trained = module.modules_to_save[module.active_adapters[0]]
            setattr(peft_model.get_submodule(parent_name), child, trained)
    return peft_model.merge_and_unload()


def head_modules_of(recipe) -> list[str]:
    """The modules counted as head: ``modules_to_save`` or, for full fine-tuning, the registry's head."""
    return list(recipe.method.get("modules_to_save") or arch_spec(recipe.model_type).head_modules)


def build_model(recipe, total_steps: int | None = None):
    """Load tokenizer and base model, then wrap it. Returns (model, tokenizer, ParameterReport).

    ``total_steps``: optimizer steps of the run (AdaLoRA's rank schedule needs it).
    qlora loads the base in 4-bit NF4 on CUDA; every other method in float32.
    """
    source = resolve_model(recipe.model.name)
    tokenizer = load_tokenizer(source.location)
    spec = method_spec(recipe.method_name)
    quantized = {"quantization_config": quantization_config(recipe), "device_map": {"": 0}} if spec.needs_cuda else {}
    model = wrap_model(load_base_model(source.location, **quantized), recipe, total_steps)
    report = parameter_report(model, head_modules_of(recipe), full=spec.config_class is None)
    return model, tokenizer, report
