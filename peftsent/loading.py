"""Load any model target for inference: a run directory, an adapter, a model directory or a hub id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from peftsent.errors import ModelError
from peftsent.methods.bottleneck import is_bottleneck_dir, load_bottleneck, read_config
from peftsent.modeling import (
    adapter_labels,
    class_names,
    class_order,
    fresh_weights,
    load_base_model,
    load_tokenizer,
    quiet_transformers,
    refuse_fresh_weights,
    to_canonical,
    unfilled_fresh_weights,
)
from peftsent.onnx_runtime import is_onnx_dir, load_onnx
from peftsent.recipe import ModelSection
from peftsent.registry import resolve_model
from peftsent.rundir import Run, is_finished_run
from peftsent.tokenization import saved_long_reviews, saved_truncation, section_policy

#: context used for targets that carry no recipe (tokens; capped at the model's usable positions)
DEFAULT_MAX_LENGTH = 256


@dataclass
class Loaded:
    """A model ready for inference (eval mode, float32 unless asked otherwise)."""

    model: object
    """``PreTrainedModel`` or ``PeftModel``; forward gives logits (batch, num_labels) in the model's own class order"""
    tokenizer: object
    kind: str
    """``run`` (adapter or full), ``adapter``, ``model`` (a directory), ``onnx`` (a ``peftsent export``
    directory, run by ONNX Runtime: :mod:`peftsent.onnx_runtime`) or ``hub``"""
    policy: object
    """the :class:`peftsent.tokenization.TokenPolicy` every input goes through"""
    run: Run | None = None
    """the run whose recipe gives the defaults (data, max length): the target itself, or the run holding merged/"""
    order: tuple[int, ...] = (0, 1)
    """indices of the classes in canonical order among the model's (:func:`peftsent.modeling.class_order`)"""
    location: str = ""
    """the target as given: a directory path or a hub id"""
    labels: tuple[str, ...] = ("negative", "positive")
    """the class names in canonical order: column i of :meth:`canonical` logits is class ``labels[i]``"""

    @property
    def max_length(self) -> int:
        """tokens per input after truncation, special tokens included"""
        return self.policy.max_length

    def canonical(self, logits):
        """Model logits (n, num_labels) -> columns in canonical class order (:attr:`labels`)."""
        return to_canonical(logits, self.order)

    def encode(self, texts: list[str]) -> dict:
        """Token columns of ``texts`` under the policy (see ``TokenPolicy.encode``)."""
        return self.policy.encode(self.tokenizer, texts)


def _is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() or is_bottleneck_dir(path)


def _adapter_base(path: Path) -> str:
    if is_bottleneck_dir(path):
        return read_config(path)[1]
    return json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")


def _adapter_tensor_names(adapter_dir: Path) -> list[str]:
    """Names of the tensors an adapter directory saves (safetensors headers only; nothing is loaded)."""
    from safetensors import safe_open

    names = []
    for file in adapter_dir.glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            names.extend(handle.keys())
    return names


def attach_adapter(base_location: str, adapter_dir: Path, dtype=None, allow_random_weights: bool = False,
                   labels=None):
    """A fresh full-precision base (never quantized) with the adapter and its trained head.

    ``labels``: the class names of the head; default the ones saved beside the adapter
    (:func:`peftsent.modeling.adapter_labels`), else negative/positive. Raises ModelError if a weight the base checkpoint lacks is not in the adapter either
    (unless ``allow_random_weights``).
    """
    from peft import PeftModel

    base, fresh = load_base_model(base_location, dtype, with_report=True,
                                  labels=labels or adapter_labels(adapter_dir))
    if not allow_random_weights:
        refuse_fresh_weights(unfilled_fresh_weights(fresh, _adapter_tensor_names(adapter_dir)), str(adapter_dir))
    try:
        if is_bottleneck_dir(adapter_dir):
            return load_bottleneck(base, adapter_dir)
        model = PeftModel.from_pretrained(base, str(adapter_dir))
        model.peftsent_fresh_weights = fresh  # what another adapter joining this base must fill (add_adapter)
        return model
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"adapter {adapter_dir} does not fit base model {base_location}: {err}") from None


def _load_classifier(location: str, dtype=None, allow_random_weights: bool = False):
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        with quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                location, dtype=dtype or torch.float32, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: weights of another size than config.json
        raise ModelError(f"model {location} could not be loaded: {err}") from None
    if not allow_random_weights:
        refuse_fresh_weights(sorted(fresh_weights(model, info)), location)
    return model


def _finish(model, tokenizer, kind: str, model_section, run, label_order, target: str) -> Loaded:
    """The one assembly of a Loaded: label order by id2label names, token policy from the model."""
    try:
        order = class_order(model.config.id2label, label_order)
        names = class_names(model.config.id2label, label_order)
    except ModelError as err:
        raise ModelError(f"{target}: {err}") from None
    policy = section_policy(model, model_section)
    return Loaded(model.eval(), tokenizer, kind, policy, run, order, target, names)


def _default_section(name: str, tokenizer):
    """Length and truncation of a target without a recipe: the tokenizer's own saved settings
    (``model_max_length``, ``peftsent_truncation`` / ``truncation_side``, as a peftsent export writes them),
    at most DEFAULT_MAX_LENGTH."""
    max_length = min(DEFAULT_MAX_LENGTH, int(getattr(tokenizer, "model_max_length", DEFAULT_MAX_LENGTH)))
    truncation = saved_truncation(tokenizer)
    long_reviews, stride = saved_long_reviews(tokenizer)
    return ModelSection(name=name, max_length=max_length, truncation=truncation, long_reviews=long_reviews,
                        stride=stride)


def _load_run(path: Path, dtype=None, label_order=None, allow_random_weights=False) -> Loaded:
    run = Run(path)
    recipe = run.recipe()
    if run.is_adapter:
        model = attach_adapter(resolve_model(recipe.model.name).location, run.weights, dtype, allow_random_weights,
                               adapter_head_labels(str(path)))
    else:
        model = _load_classifier(str(run.weights), dtype, allow_random_weights)
    return _finish(model, load_tokenizer(str(run.weights)), "run", recipe.model, run, label_order, str(path))


def adapter_head_labels(target: str) -> list[str] | None:
    """The ordered class names the head of an adapter ``target`` gets when it loads (the one decision of it,
    read from files, no weights): a finished adapter run's recipe labels, else those saved beside its adapter;
    an adapter directory's saved labels, else the recipe labels of the run holding it. None: neither
    (:func:`peftsent.modeling.label_config`'s negative/positive apply)."""
    path = Path(target).expanduser()
    if is_finished_run(path):
        run = Run(path)
        return run.recipe().data.labels or adapter_labels(run.weights)
    run = target_run(target)
    return adapter_labels(path) or (run.recipe().data.labels if run is not None else None)


def target_run(target: str) -> Run | None:
    """The run whose recipe gives ``target``'s defaults (the run itself, or the run holding it), without
    loading any weights; None for a bare directory or a hub id."""
    path = Path(target).expanduser()
    if not path.is_dir():
        return None
    if is_finished_run(path):
        return Run(path)
    return Run(path.resolve().parent) if is_finished_run(path.resolve().parent) else None


def load_target(target: str, dtype=None, label_order: str | None = None, allow_random_weights: bool = False) -> Loaded:
    """Load ``target`` for inference.

    ``target``: a finished run directory, a peft adapter directory (its
    ``base_model_name_or_path`` is loaded as base), a model directory, an ONNX export
    (``model.onnx`` beside config.json, written by ``peftsent export``; ``dtype`` does not apply: the
    graph runs at the precision it was exported in), or a hub id. ``label_order``: class names in index
    order for a model whose id2label does not name them (``negative,positive``). ``allow_random_weights``:
    score a model even if some weights are not in its checkpoint. Raises ModelError/RunDirError if it is
    none of these, cannot be loaded, has freshly initialised weights, or unnamed classes.
    """
    path = Path(target).expanduser()
    if path.is_dir():
        if is_finished_run(path):
            return _load_run(path, dtype, label_order, allow_random_weights)
        parent = Run(path.resolve().parent) if is_finished_run(path.resolve().parent) else None
        recipe = parent.recipe() if parent else None
        if is_onnx_dir(path):  # before config.json: an export holds both
            model, kind = load_onnx(path), "onnx"
        elif _is_adapter_dir(path):
            # inside a run, the recipe names the base (portable); a bare adapter names it in its config
            base = recipe.model.name if recipe else _adapter_base(path)
            model = attach_adapter(resolve_model(base).location, path, dtype, allow_random_weights,
                                   adapter_head_labels(str(path)))
            kind = "adapter"
        elif (path / "config.json").is_file():
            model, kind = _load_classifier(str(path), dtype, allow_random_weights), "model"
        else:
            raise ModelError(
                f"{path} is neither a run directory, an adapter directory (adapter_config.json) "
                f"nor a model directory (config.json)"
            )
        tokenizer = load_tokenizer(str(path))
        section = recipe.model if recipe else _default_section(str(path), tokenizer)
        return _finish(model, tokenizer, kind, section, parent, label_order, target)
    source = resolve_model(target)
    model = _load_classifier(source.location, dtype, allow_random_weights)
    tokenizer = load_tokenizer(source.location)
    return _finish(model, tokenizer, "hub", _default_section(target, tokenizer), None, label_order, target)


def shared_adapter_source(target: str) -> tuple[Path, str] | None:
    """(adapter directory, base model location) of a target that is a LoRA adapter (a finished adapter run or
    an adapter directory), read from its files without loading weights; None for anything else (full runs,
    model directories, hub ids, bottleneck and other peft adapters), which load on their own base.

    LoRA adapters on the same base can share one base model in memory (:func:`add_adapter`) and run in one mixed
    batch (peft's ``adapter_names``).
    """
    path = Path(target).expanduser()
    if not path.is_dir():
        return None
    run = Run(path) if is_finished_run(path) else None
    if run is not None and not run.is_adapter:
        return None
    adapter_dir = run.weights if run is not None else path
    config = adapter_dir / "adapter_config.json"
    if not config.is_file() or json.loads(config.read_text()).get("peft_type") != "LORA":
        return None
    run = run or target_run(target)
    base = run.recipe().model.name if run is not None else _adapter_base(adapter_dir)
    return adapter_dir, resolve_model(base).location


def add_adapter(shared: Loaded, target: str, adapter_name: str, label_order: str | None = None,
                allow_random_weights: bool = False) -> Loaded:
    """Load ``target``'s LoRA adapter into ``shared.model`` (a ``PeftModel`` on the same base, see
    :func:`shared_adapter_source`) under ``adapter_name``; returns a Loaded for it that shares the model (the
    adapter's weights and head are its only new memory) with its own tokenizer, token policy, run and class order.

    Only the active adapter runs by default: select one with ``model.set_adapter`` or mix them per row with
    ``model(..., adapter_names=[...])``. Raises ModelError if the adapter does not fit the base or leaves a weight
    the base checkpoint lacks (the classification head) at its random start (unless ``allow_random_weights``); a
    module the first adapter saved and this one did not (a pretrained pooler or LayerNorm) runs the base's copy
    for its rows, as it does when this adapter is loaded alone.
    """
    adapter_dir, _ = shared_adapter_source(target)
    from peft.utils import ModulesToSaveWrapper

    model = shared.model
    heads = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                    if isinstance(module, ModulesToSaveWrapper)})  # the head modules the base keeps per adapter
    saved = _adapter_tensor_names(adapter_dir)
    fresh = getattr(model, "peftsent_fresh_weights", None)  # the base's weights loading initialised at random
    if fresh is not None:
        unfilled = unfilled_fresh_weights(fresh, saved)
    else:  # a model attach_adapter did not load: every head the base keeps per adapter must be saved
        unfilled = [f"{head}.weight" for head in heads if not any(f"{head}." in name for name in saved)]
    if unfilled and not allow_random_weights:
        refuse_fresh_weights(unfilled, str(adapter_dir))
    try:
        model.load_adapter(str(adapter_dir), adapter_name=adapter_name)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ModelError(f"adapter {adapter_dir} does not fit the base of {shared.location}: {err}") from None
    run = target_run(target)
    tokenizer = load_tokenizer(str(adapter_dir))
    section = run.recipe().model if run is not None else _default_section(str(adapter_dir), tokenizer)
    kind = "run" if is_finished_run(Path(target).expanduser()) else "adapter"
    return _finish(model, tokenizer, kind, section, run, label_order, target)
