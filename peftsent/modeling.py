"""Build the model a recipe asks for: base encoder + classification head, wrapped by its method.

Also the parameter report (adapter / head / frozen) and the checks that every
requested ``target_modules`` name matches a module of the model.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

from peftsent.errors import ModelError, PeftsentError, RecipeError
from peftsent.inference import window_stride
from peftsent.methods import make_peft_config, method_spec
from peftsent.methods.bottleneck import add_bottleneck_adapters
from peftsent.registry import (
    ID2LABEL,
    ModelSource,
    arch_spec,
    head_to_save,
    resolve_model,
)
from peftsent.tokenization import review_tokens


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


def label_config(labels=None) -> dict:
    """``num_labels``, ``id2label`` and ``label2id`` of the ordered class names ``labels`` (default
    negative/positive): the config keys every saved model carries."""
    names = [str(n) for n in (labels or ID2LABEL.values())]
    return {"num_labels": len(names), "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)}}


#: the class names of an adapter directory (adapters carry no config.json): ``{"id2label": {"0": name, ...}}``
ADAPTER_LABELS_FILE = "labels.json"


def write_adapter_labels(directory, labels) -> None:
    """Save the ordered class names beside an adapter's weights (:data:`ADAPTER_LABELS_FILE`)."""
    import json
    from pathlib import Path

    config = label_config(labels)
    text = json.dumps({"id2label": {str(i): n for i, n in config["id2label"].items()}}, indent=2) + "\n"
    (Path(directory) / ADAPTER_LABELS_FILE).write_text(text)


def adapter_labels(directory) -> list[str] | None:
    """The ordered class names saved beside an adapter (:func:`write_adapter_labels`), or None (an adapter
    written before labels were saved, or by another tool: its base model's two classes apply)."""
    import json
    from pathlib import Path

    path = Path(directory) / ADAPTER_LABELS_FILE
    if not path.is_file():
        return None
    id2label = json.loads(path.read_text())["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]


def load_base_model(location: str, dtype=None, with_report: bool = False, labels=None, **kwargs):
    """``AutoModelForSequenceClassification`` with a head of ``len(labels)`` classes and id2label = ``labels``
    (the run's ordered class names, :func:`peftsent.data.label_names`; default negative/positive).

    ``dtype`` (e.g. ``torch.float32``) defaults to float32; ``kwargs`` go to
    ``from_pretrained`` (quantization_config, device_map). ``with_report``: return
    (model, fresh weights) where fresh weights are :func:`fresh_weights` of transformers' loading report.
    Raises ModelError if loading fails.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        with quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                location, **label_config(labels),
                dtype=dtype or torch.float32, output_loading_info=True, **kwargs,
            )
    except (OSError, ValueError) as err:
        raise ModelError(f"model {location} could not be loaded: {err}") from None
    return (model, fresh_weights(model, info)) if with_report else model


#: config attributes holding an encoder's own dropout: BERT's and RoBERTa's (hidden, attention probabilities;
#: MiniLM checkpoints are BERT), then DistilBERT's names for the same two: the registry's model types
ENCODER_DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


def dropout_overrides(location: str, dropout: float | None) -> dict:
    """The ``from_pretrained`` config overrides that set an encoder's hidden and attention dropout to
    ``dropout`` (a probability; ``model.dropout`` of a recipe). The one place this is decided.

    Returns {} for None (keep the checkpoint's). The classification head keeps its dropout: where a config
    derives it from ``hidden_dropout_prob`` (BERT, RoBERTa: ``classifier_dropout`` null) the old value is
    pinned as ``classifier_dropout``; DistilBERT's head has its own ``seq_classif_dropout``.
    Raises RecipeError if the model's config has none of :data:`ENCODER_DROPOUT_KEYS`.
    """
    if dropout is None:
        return {}
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise ModelError(f"model {location} could not be loaded: {err}") from None
    overrides = {key: float(dropout) for key in ENCODER_DROPOUT_KEYS
                 if isinstance(getattr(config, key, None), (int, float))}
    if not overrides:
        raise RecipeError(f"model.dropout: the {config.model_type} config of {location} has none of "
                          f"{', '.join(ENCODER_DROPOUT_KEYS)}; remove model.dropout to keep the model's own dropout")
    if "hidden_dropout_prob" in overrides and hasattr(config, "classifier_dropout") and config.classifier_dropout is None:
        overrides["classifier_dropout"] = config.hidden_dropout_prob
    return overrides


# ---------------------------------------------------------------- weights the checkpoint did not provide


def fresh_weights(model, loading_info: dict) -> set[str]:
    """Parameters of ``model`` that ``from_pretrained`` initialised anew: transformers' own loading report
    (``output_loading_info=True``), missing keys plus size-mismatched keys, restricted to parameters."""
    mismatched = {k[0] if isinstance(k, (tuple, list)) else k for k in loading_info.get("mismatched_keys") or ()}
    names = {name for name, _ in model.named_parameters()}
    return (set(loading_info.get("missing_keys") or ()) | mismatched) & names


def plain_name(name: str) -> str:
    """A parameter name as in the base model's own state dict: peft's ``base_model.model.`` prefix and
    ``modules_to_save.<adapter>`` copy dropped (``base_model.model.classifier.modules_to_save.default.weight``
    -> ``classifier.weight``)."""
    import re

    name = re.sub(r"^base_model\.(model\.)?", "", name)
    return re.sub(r"\.modules_to_save(\.default)?(?=\.)", "", name)


def _modules_of(names) -> list[str]:
    return sorted({name.rpartition(".")[0] for name in names})


def check_fresh_weights_trained(model, fresh: set[str], recipe) -> None:
    """At train time: every weight the checkpoint did not provide must be trained by the run.

    ``fresh``: from :func:`load_base_model` (``with_report=True``); ``model``: after the method is applied.
    A frozen fresh weight would be random at every load (e.g. a pooler missing from a BertModel saved
    with ``add_pooling_layer=False``). Raises RecipeError naming the modules and the fix.
    """
    trained = {plain_name(name) for name, param in model.named_parameters() if param.requires_grad}
    frozen = sorted(name for name in fresh if name not in trained)
    if not frozen:
        return
    modules = _modules_of(frozen)
    prefix = getattr(getattr(model, "base_model", model), "base_model_prefix", "") or ""
    short = [m[len(prefix) + 1:] if prefix and m.startswith(prefix + ".") else m for m in modules]
    wanted = list(recipe.method.get("modules_to_save") or []) + short
    raise RecipeError(
        f"model.name: {recipe.model.name} does not provide {', '.join(frozen[:6])} (transformers' loading report: "
        f"newly initialised) and method '{recipe.method_name}' does not train {', '.join(modules)}: they would be "
        f"random at every load; train them: method.modules_to_save=[{', '.join(wanted)}]", recipe.source)


def unfilled_fresh_weights(fresh: set[str], provided) -> list[str]:
    """The fresh weights of a base model that an adapter's saved tensors (``provided``, as saved) do not fill."""
    filled = {plain_name(name) for name in provided}
    return sorted(name for name in fresh if name not in filled)


def refuse_fresh_weights(names, location: str) -> None:
    """At eval/predict time: raise ModelError if any weight is freshly initialised (scores would be random)."""
    if names:
        raise ModelError(
            f"{location}: {len(names)} weights are not in the checkpoint and were initialised at random "
            f"(transformers' loading report), in {', '.join(_modules_of(names))}; scores would change at every "
            f"load. Score a trained model (a run directory, its adapter or merged model), or pass "
            f"--allow-random-weights to score it anyway")


# ---------------------------------------------------------------- label order


#: label sets whose classes have a fixed order whatever a model's head order (a hub model may put positive
#: first): the canonical order every peftsent path uses; any other set keeps the model's own id order
CANONICAL_ORDERS = (tuple(ID2LABEL.values()), ("negative", "neutral", "positive"))


def class_names(id2label: dict, label_order: str | None = None) -> tuple[str, ...]:
    """The class names of a model in canonical order (:func:`class_order`): negative/positive and
    negative/neutral/positive in that order, other label sets in the model's id order. Raises ModelError
    as :func:`class_order` does."""
    names = _model_names(id2label, label_order)
    for canonical in CANONICAL_ORDERS:
        if sorted(n.lower() for n in names) == sorted(canonical):
            return canonical
    return tuple(names)


def _model_names(id2label: dict, label_order: str | None) -> list[str]:
    names = [str(n) for _, n in sorted((int(i), n) for i, n in (id2label or {}).items())]
    unnamed = all(n.lower().startswith("label_") for n in names)
    if label_order is not None:
        given = [n.strip() for n in str(label_order).split(",")]
        if len(given) != len(names):
            raise ModelError(f"--label-order {label_order}: the model has {len(names)} classes; give {len(names)} "
                             f"names in the order of its classes 0..{len(names) - 1}, e.g. --label-order "
                             f"{','.join(CANONICAL_ORDERS[0] if len(names) == 2 else CANONICAL_ORDERS[1] if len(names) == 3 else map(str, range(len(names))))}")
        if len({n.lower() for n in given}) != len(given):
            raise ModelError(f"--label-order {label_order}: each class must be named once")
        if not unnamed and [n.lower() for n in given] != [n.lower() for n in names]:
            raise ModelError(f"--label-order {label_order} contradicts the model's id2label "
                             f"{dict(enumerate(names))}; drop --label-order")
        return given
    if unnamed:
        example = ",".join(CANONICAL_ORDERS[0] if len(names) == 2 else CANONICAL_ORDERS[1] if len(names) == 3
                           else [f"name{i}" for i in range(len(names))])
        raise ModelError(f"the model's id2label {dict(enumerate(names))} does not name its classes; set "
                         f"config.json's id2label to the head's rows, e.g. {{\"0\": \"negative\", \"1\": "
                         f"\"positive\"}}, or pass --label-order {example} (the names of classes 0..{len(names) - 1})")
    return names


def class_order(id2label: dict, label_order: str | None = None) -> tuple[int, ...]:
    """Indices of the model's classes in canonical order, by its ``id2label`` names (case-insensitive):
    (negative, positive) and (negative, neutral, positive) are put in that order; any other label set (a
    peftsent-made model's ``data.labels``, e.g. ``1``..``5``) keeps its id order.

    ``label_order``: the names of the classes in index order (comma-separated), accepted for models whose
    names do not say (``LABEL_0``, ``LABEL_1``, ...); must agree with the names when they do.
    Raises ModelError for unnamed classes without ``label_order``, a ``label_order`` of another length, or a
    contradicting ``label_order``. The one place class indices are mapped; logits are reordered by
    :func:`to_canonical`.
    """
    names = [n.lower() for n in _model_names(id2label, label_order)]
    for canonical in CANONICAL_ORDERS:
        if sorted(names) == sorted(canonical):
            return tuple(names.index(n) for n in canonical)
    return tuple(range(len(names)))


def to_canonical(logits, order: tuple[int, ...]):
    """``logits`` (n, num_labels) with columns reordered to canonical class order: ``logits[:, order]``."""
    return logits[:, list(order)]


def virtual_tokens(method: dict) -> int:
    """Positions a method prepends to every input (prompt and p-tuning), else 0."""
    option = method_spec(method["name"]).virtual_tokens_option
    return int(method.get(option) or 0) if option else 0


def max_input_tokens(model_config, requested: int, method: dict | None = None) -> int:
    """Tokens a review may have before any weights load (recipe checks): see :func:`tokenization.review_tokens`."""
    return review_tokens(model_config, requested, virtual_tokens(method) if method else 0)


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
        if isinstance(wanted, str):  # a regex, full-matched against module names as peft does
            import re

            try:
                matched = any(re.fullmatch(wanted, name) for name in names)
            except re.error as err:
                problems.append(f"method.{key}: '{wanted}' is not a valid regular expression ({err}); "
                                f"{_module_names_hint(key, recipe)}")
                continue
            if not matched:
                problems.append(f"method.{key}: '{wanted}' (a regular expression) matches no module of this "
                                f"{recipe.model_type} model; {_module_names_hint(key, recipe)}")
            continue
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
        config = AutoConfig.from_pretrained(source.location, **label_config(recipe.data.labels))
        with torch.device("meta"), quiet_transformers():
            model = AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise RecipeError(f"model.name: {source.name} has an invalid config: {err}", recipe.source) from None
    room = max_input_tokens(config, recipe.model.max_length, recipe.method)
    if room < 8:
        raise RecipeError(f"method: {virtual_tokens(recipe.method)} virtual tokens leave {room} positions of "
                          f"the model's {max_input_tokens(config, 10**9)} for the review; lower num_virtual_tokens",
                          recipe.source)
    if recipe.model.long_reviews == "window" and recipe.model.stride is not None:
        _check_stride(recipe, source, room)
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


def _check_stride(recipe, source: ModelSource, room: int) -> None:
    """``model.stride`` against the review tokens the model really gets (``room``: capped at its positions less
    virtual tokens), with the tokenizer's special tokens, before any weights load. Raises RecipeError."""
    try:
        window_stride(load_tokenizer(source.location), room, recipe.model.stride, key="model.stride")
    except PeftsentError as err:
        raise RecipeError(str(err), recipe.source) from None


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


def build_model(recipe, total_steps: int | None = None, labels=None):
    """Load tokenizer and base model, then wrap it. Returns (model, tokenizer, ParameterReport).

    ``labels``: the run's ordered class names (the head's rows, ``id2label``); default ``data.labels`` of the
    recipe, else negative/positive.

    Raises RecipeError if a weight the checkpoint does not provide would not be trained
    (:func:`check_fresh_weights_trained`).

    ``total_steps``: optimizer steps of the run (AdaLoRA's rank schedule needs it).
    qlora loads the base in 4-bit NF4 on CUDA; every other method in float32.
    """
    source = resolve_model(recipe.model.name)
    tokenizer = load_tokenizer(source.location)
    spec = method_spec(recipe.method_name)
    quantized = {"quantization_config": quantization_config(recipe), "device_map": {"": 0}} if spec.needs_cuda else {}
    base, fresh = load_base_model(source.location, with_report=True, labels=labels or recipe.data.labels, **quantized,
                                  **dropout_overrides(source.location, recipe.model.dropout))
    model = wrap_model(base, recipe, total_steps)
    check_fresh_weights_trained(model, fresh, recipe)
    report = parameter_report(model, head_modules_of(recipe), full=spec.config_class is None)
    return model, tokenizer, report
