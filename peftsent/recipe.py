"""Recipes: one YAML file per fine-tuning run, validated strictly before anything loads.

A recipe has five sections::

    model:  {name, max_length}                       -> ModelSection
    data:   {name, text_column, label_column, ...}   -> DataSection
    method: {name, <options of the peft config>}     -> dict, checked against e.g. peft.LoraConfig
    train:  {<any transformers.TrainingArguments field>}
    eval:   {ece_bins, test, baseline, calibrate, also} -> EvalSection
    tune:   {<search keys>, <settings>}              -> optional; read by ``peftsent.tune`` only

Unknown keys, wrong types, unknown methods and overrides of keys that do not
exist are all collected and raised together as one :class:`RecipeError`,
each naming its dotted path and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peftsent.data import also_problems, label_problems
from peftsent.errors import ModelError, RecipeError, did_you_mean
from peftsent.methods import METHODS, make_peft_config, method_spec, supported_methods
from peftsent.metrics import SELECTION_METRICS, greater_is_better
from peftsent.registry import (
    MODULE_GROUPS,
    arch_spec,
    expand_module_groups,
    model_type_of,
)
from peftsent.search_space import parse_tune
from peftsent.textfiles import check_encoding
from peftsent.tokenization import LONG_REVIEWS, TRUNCATIONS
from peftsent.training_args import (
    EVAL_BATCH_SIZE,
    TRAIN_EXTRAS,
    class_weight_problems,
    hardware_problems,
    make_training_args,
)

SECTIONS = ("model", "data", "method", "train", "eval")
#: the values ``eval.baseline`` accepts: ``tfidf`` adds TF-IDF + logistic regression (peftsent.baseline)
BASELINES = ("none", "tfidf")
#: sections a recipe may add; ``tune`` (the search space of peftsent.tune) is validated, then ignored by train
OPTIONAL_SECTIONS = ("tune",)


@dataclass
class ModelSection:
    """Which encoder to fine-tune."""

    name: str
    """``minilm-l6`` (embedded, offline), a local model directory, or a hub id (``distilbert-base-uncased``)"""
    max_length: int = 256
    """tokens per review after truncation, special tokens included; capped at the model's usable positions
    less a prompt method's virtual tokens (``peftsent.tokenization.token_policy``)"""
    truncation: str = "head"
    """which tokens of a longer review are kept: ``head`` (the first), ``tail`` (the last) or ``head+tail``
    (the first 128 and the rest from the end, Sun et al. 2019; see ``peftsent.tokenization``)"""
    long_reviews: str = "truncate"
    """how a review longer than ``max_length`` is scored by the run's evaluations, ``eval`` and ``predict``
    (training always sees the truncated review): ``truncate`` (one pass over the kept tokens) or ``window``
    (the logits of overlapping ``max_length``-token windows averaged; ``peftsent.tokenization``)"""
    stride: int | None = None
    """``long_reviews: window``: tokens shared by consecutive windows; null: ``max_length // 2``"""
    dropout: float | None = None
    """dropout probability of the encoder's own hidden and attention dropout during training (BERT's
    ``hidden_dropout_prob`` / ``attention_probs_dropout_prob``, DistilBERT's ``dropout`` /
    ``attention_dropout``; ``peftsent.modeling.dropout_overrides``); null keeps the checkpoint's (0.1 for
    BERT-family models). The classification head keeps its own dropout. 0 lets attention use the fused SDPA
    kernel: on CPU 2.3x faster LoRA steps (``benchmarks/throughput.py --levers``), 1.5x faster quick LoRA run"""


@dataclass
class DataSection:
    """Which reviews to train and evaluate on. Sizes are counts of reviews."""

    name: str
    """``imdb``, ``imdb-offline``, ``rotten_tomatoes``, ``rotten_tomatoes-offline``, a local
    csv/json/jsonl/parquet file used as the train split, a hub dataset id (``owner/name``; ``config`` picks its
    configuration) or a directory written by ``save_to_disk`` (``peftsent.data``)"""
    config: str | None = None
    """configuration (subset) of a hub dataset, passed to ``datasets.load_dataset(name, config)``, e.g.
    ``sentiment`` of ``cardiffnlp/tweet_eval``; null: the dataset's default"""
    text_column: str = "text"
    """column holding the review text (local files, hub and saved datasets)"""
    label_column: str = "label"
    """column holding the label (local files): class names or integers, read by the rules of ``labels``"""
    labels: list[str | int] | None = None
    """the ordered class names, e.g. ``[negative, neutral, positive]`` or ``["1", "2", "3", "4", "5"]``; index i
    of the list is class id i (``id2label``). null: inferred from the training file
    (``peftsent.data.decide_labels``): negative/positive, then negative/neutral/positive (any case); integers
    sorted (0/1 read as negative/positive); any other names need this key"""
    validation_file: str | None = None
    """local file for the validation split; carved from train when absent"""
    test_file: str | None = None
    """local file for the test split; carved from train when absent"""
    validation_size: float = 0.1
    """fraction (< 1) or count (>= 1) of train carved as validation, stratified, where a dataset has none"""
    test_size: float = 0.1
    """fraction or count of train carved as test when a local dataset has no test file"""
    max_train_samples: int | None = None
    """seeded, stratified subset of train (None: all)"""
    max_eval_samples: int | None = None
    """seeded, stratified subset of validation (None: all)"""
    max_test_samples: int | None = None
    """seeded, stratified subset of test (None: all)"""
    sample_seed: int = 0
    """seed of the subsets and carved splits; fixed so every recipe sees the same reviews"""
    label_map: dict[str | int | float | bool, str | int] | None = None
    """raw label -> class name, e.g. ``{pos: positive, neg: negative}`` (IMDb's archive folders) or
    ``{-1: negative, 0: neutral, 1: positive}``; keys as YAML writes them (text, numbers, booleans), compared
    case-insensitively. A map that merges several raw labels into one class is printed; missing labels cannot
    be mapped (see ``drop_missing``)"""
    drop_missing: bool = False
    """drop rows with no label (empty, NaN, null) and print how many; by default they are an error listing them"""
    allow_overlap: bool = False
    """accept validation_file / test_file reviews whose text is also in the train file (leaked reviews;
    by default an error that counts them)"""
    encoding: str = "utf-8"
    """text encoding of local csv/json/jsonl files (any Python codec name: ``cp1252`` or ``latin-1`` for most
    spreadsheet exports, ``utf-16``); a byte-order mark is accepted. A file that does not decode is an error
    that suggests its likely encoding (``peftsent.textfiles``)"""


@dataclass
class EvalSection:
    """How runs are evaluated."""

    ece_bins: int = 15
    """equal-width confidence bins of the expected calibration error (Guo et al. 2017)"""
    test: bool = True
    """evaluate the test split once at the end of training (never used for model selection)"""
    baseline: str = "none"
    """``tfidf``: also fit TF-IDF + logistic regression on the same training reviews (seconds; see
    peftsent.baseline) and report it beside the run; ``none``: no baseline"""
    calibrate: bool = True
    """fit a temperature on the validation split at the end of training (Guo et al. 2017), kept in
    calibration.json and applied by eval, predict and merge"""
    also: list[str] = field(default_factory=list)
    """more datasets whose test split is scored at the end of training (out-of-domain), e.g.
    [rotten_tomatoes-offline]; stored under ``also`` in metrics.json"""


#: peftsent's TrainingArguments defaults; any other TrainingArguments field may be set in a recipe
TRAIN_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 1.0,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": EVAL_BATCH_SIZE,  # 32: less activation memory than 64, same speed
    "learning_rate": 5e-5,  # per optimizer step, peak of the linear schedule
    "weight_decay": 0.01,
    "warmup_steps": 0.1,  # a float < 1 is a fraction of all optimizer steps
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "accuracy",  # on the validation split, never test; greater_is_better follows it
    "save_total_limit": 1,  # the best checkpoint is kept as well when it is not the newest
    "save_only_model": False,  # full checkpoints (optimizer, scheduler, RNG): --resume continues them
    "logging_steps": 20,
    "report_to": ["tensorboard"],
    "train_sampling_strategy": "group_by_length",  # batches of similar length: less padding
    "label_names": ["labels"],
    "seed": 42,
    "bf16": "auto",  # bf16 autocast where the CPU/GPU supports it; parameters stay fp32
}

#: TrainingArguments fields peftsent decides itself -> what to use instead
CONTROLLED_TRAIN_KEYS: dict[str, str] = {
    "resume_from_checkpoint": "python -m peftsent.train RECIPE --resume (continues the newest complete checkpoint)",
    "overwrite_output_dir": "python -m peftsent.train RECIPE --overwrite",
    "do_train": "python -m peftsent.train trains every recipe; remove the key",
    "do_eval": "validation runs on train.eval_strategy; remove the key",
    "do_predict": "the test split is scored once at the end (eval.test); remove the key",
}

#: peft config fields that describe a saved adapter rather than a choice a recipe makes
_PEFT_INTERNAL = {"peft_type", "auto_mapping", "base_model_name_or_path", "revision", "inference_mode"}


@dataclass
class Recipe:
    """A validated recipe with every default filled in."""

    model: ModelSection
    data: DataSection
    method: dict[str, Any]
    """``name`` plus the options of the method's peft config class"""
    train: dict[str, Any]
    """keyword arguments of ``transformers.TrainingArguments`` (``output_dir`` is the run directory)"""
    eval: EvalSection
    source: str = "<dict>"
    """where the recipe came from (path), for messages"""
    model_type: str = field(default="")
    """``config.model_type`` of the base model, from the registry or the model's config"""
    tune: dict[str, Any] = field(default_factory=dict)
    """the raw ``tune`` section (search space of peftsent.tune); not part of :meth:`to_dict`: a run is one
    concrete recipe"""

    @property
    def method_name(self) -> str:
        return self.method["name"]

    @property
    def run_dir(self) -> Path:
        """The run directory (``train.output_dir``)."""
        return Path(self.train["output_dir"])

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe, as saved in ``<run>/recipe.yaml``."""
        return {
            "model": dataclasses.asdict(self.model),
            "data": dataclasses.asdict(self.data),
            "method": dict(self.method),
            "train": dict(self.train),
            "eval": dataclasses.asdict(self.eval),
        }

    def dump(self, path: Path) -> None:
        """Write the resolved recipe as YAML."""
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (YAML 1.1 demands ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """Parse one override value as YAML (``3e-4`` -> float, ``[a, b]`` -> list, ``null`` -> None)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        hint = " (recipes ship in recipes/ and recipes/quick/)" if not path.is_absolute() else ""
        raise RecipeError(f"file not found: {path}{hint}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except UnicodeDecodeError:
        raise RecipeError("not a UTF-8 text file; a recipe is YAML text", source=str(path)) from None
    except yaml.YAMLError as err:
        raise RecipeError(f"not valid YAML: {err}", source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"expected a mapping of sections {list(SECTIONS)}, found {type(data).__name__}", str(path))
    return data


# ---------------------------------------------------------------- schemas


def _dataclass_schema(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _train_schema() -> dict[str, Any]:
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    schema = {f.name: hints[f.name] for f in dataclasses.fields(TrainingArguments) if f.init}
    return {**schema, **{key: kind for key, (kind, _) in TRAIN_EXTRAS.items()}}


def _method_schema(name: str) -> dict[str, Any]:
    spec = method_spec(name)
    config_class = spec.load_config_class()
    schema: dict[str, Any] = {"name": str}
    if config_class is not None:
        hints = typing.get_type_hints(config_class)
        schema.update(
            {f.name: hints[f.name] for f in dataclasses.fields(config_class) if f.init and f.name not in _PEFT_INTERNAL}
        )
    schema.update({key: kind for key, (kind, _) in spec.extra_options.items()})
    return schema


def section_schema(section: str, raw: dict) -> dict[str, Any] | None:
    """Valid keys of ``section`` with their types; None when the method is unknown."""
    if section == "model":
        return _dataclass_schema(ModelSection)
    if section == "data":
        return _dataclass_schema(DataSection)
    if section == "eval":
        return _dataclass_schema(EvalSection)
    if section == "train":
        return _train_schema()
    name = (raw.get("method") or {}).get("name") if isinstance(raw.get("method"), dict) else None
    return _method_schema(name) if name in METHODS else None


def _tuples_where_expected(value: Any, annotation: Any) -> Any:
    """``value`` as YAML gives it, with a list turned into a tuple wherever ``annotation`` expects a tuple (YAML
    has no tuples: ``layer_replication: [[0, 4], [2, 6]]`` is peft's ``list[tuple[int, int]]``); anything else
    as it is. Only for type checking: the recipe keeps the lists (``yaml.safe_dump`` writes no tuples)."""
    import types

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            converted = _tuples_where_expected(value, arg)
            if converted is not value:
                return converted
        return value
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_tuples_where_expected(item, args[0]) for item in value)
        if len(args) == len(value):
            return tuple(_tuples_where_expected(item, arg) for item, arg in zip(value, args))
        return tuple(value)
    if origin in (list, set, frozenset) and isinstance(value, list) and args:
        return [_tuples_where_expected(item, args[0]) for item in value]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {key: _tuples_where_expected(item, args[1]) for key, item in value.items()}
    return value


def _type_problem(path: str, value: Any, annotation: Any) -> str | None:
    from pydantic import TypeAdapter, ValidationError

    if path == "train.bf16" and value == "auto":
        return None
    try:
        TypeAdapter(annotation).validate_python(_tuples_where_expected(value, annotation), strict=True)
    except ValidationError as err:
        expected = annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
        hint = ""
        if isinstance(value, bool) or value is None:
            hint = "; YAML reads no/yes/off/on/~ as booleans or null: quote the word, e.g. 'no'"
        return f"{path}: expected {expected}, found {value!r} ({type(value).__name__}): {err.errors()[0]['msg']}{hint}"
    except Exception:  # an annotation pydantic cannot check: leave it to the config class
        return None
    return None


# ---------------------------------------------------------------- overrides


def _apply_overrides(raw: dict, overrides: typing.Sequence[str], problems: list[str]) -> dict:
    """Apply ``section.key=value`` overrides to ``raw``; unknown keys become problems, not values."""
    # method.name first: it decides which keys the method section has
    ordered = sorted(overrides, key=lambda o: not o.startswith("method.name="))
    for item in ordered:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            problems.append(f"override '{item}': expected section.key=value, e.g. train.learning_rate=3e-4")
            continue
        section, name = parts
        if section not in SECTIONS:
            problems.append(f"override '{item}': unknown section '{section}'; {did_you_mean(section, SECTIONS)}")
            continue
        schema = section_schema(section, raw)
        if schema is not None and name not in schema and not (section == "train" and name in CONTROLLED_TRAIN_KEYS):
            problems.append(f"override '{item}': {section}.{name} does not exist; {did_you_mean(name, schema)}")
            continue
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            continue  # reported by section validation
        target[name] = parse_value(text)
    return raw


# ---------------------------------------------------------------- validation


def _check_section(section: str, values: Any, raw: dict, problems: list[str]) -> None:
    if not isinstance(values, dict):
        problems.append(f"{section}: expected a mapping of keys, found {type(values).__name__}")
        return
    if section == "method":
        name = values.get("name")
        if name is None:
            problems.append(f"method.name: missing; expected one of {', '.join(METHODS)}")
            return
        if not isinstance(name, str):
            problems.append(f"method.name: expected one method name (e.g. lora), found {name!r}")
            return
        if name not in METHODS:
            problems.append(f"method.name: unknown method {name!r}; {did_you_mean(str(name), METHODS)} (methods: {', '.join(METHODS)})")
            return
    schema = section_schema(section, raw) or {}
    owner = {"method": f" for method '{values.get('name')}'", "train": " (transformers.TrainingArguments)"}.get(section, "")
    for key, value in values.items():
        path = f"{section}.{key}"
        if section == "train" and key in CONTROLLED_TRAIN_KEYS:
            problems.append(f"{path}: peftsent sets this itself; use {CONTROLLED_TRAIN_KEYS[key]}")
            continue
        if key not in schema:
            problems.append(f"{path}: unknown key{owner}; {did_you_mean(str(key), schema)}")
            continue
        problem = _type_problem(path, value, schema[key])
        if problem and section == "method":
            problem = _module_group_problem(key, value, problem)
        if problem:
            problems.append(problem)
    if section in ("model", "data"):
        for key in ("name",):
            if key not in values:
                problems.append(f"{section}.{key}: missing (required)")


def _module_group_problem(key: str, value: Any, problem: str) -> str | None:
    """A symbolic module group (``modules_to_save: head``) is valid where the field wants a list of names."""
    groups = MODULE_GROUPS.get(key)
    if not groups or not isinstance(value, str):
        return problem
    if value in groups:
        return None
    return f"{problem}; or one of the symbolic groups: {', '.join(groups)}"


def _check_raw(raw: dict, problems: list[str]) -> None:
    for section in raw:
        if section not in SECTIONS + OPTIONAL_SECTIONS:
            problems.append(f"{section}: unknown section; {did_you_mean(str(section), SECTIONS + OPTIONAL_SECTIONS)}")
    for section in ("model", "data", "method"):
        if section not in raw:
            problems.append(f"{section}: missing section (required)")
    for section in SECTIONS:
        if section in raw:
            _check_section(section, raw[section], raw, problems)
    if "tune" in raw:
        _check_tune(raw, problems)


def _check_tune(raw: dict, problems: list[str]) -> None:
    """The tune section's keys, distributions and metric (peftsent.tune.parse_tune decides them)."""
    train = {**TRAIN_DEFAULTS, **(raw["train"] if isinstance(raw.get("train"), dict) else {})}
    _, found = parse_tune(raw["tune"], SECTIONS, lambda section: section_schema(section, raw),
                          train["metric_for_best_model"], train["seed"])
    problems.extend(found)


def _check_values(recipe: Recipe, problems: list[str]) -> None:
    """Cross-field rules, each naming the key to change."""
    if recipe.model.truncation not in TRUNCATIONS:
        problems.append(f"model.truncation: expected one of {', '.join(TRUNCATIONS)}, found {recipe.model.truncation!r}")
    if recipe.model.long_reviews not in LONG_REVIEWS:
        problems.append(f"model.long_reviews: expected one of {', '.join(LONG_REVIEWS)}, found {recipe.model.long_reviews!r}")
    stride = recipe.model.stride
    if stride is not None:
        if recipe.model.long_reviews != "window":
            problems.append(f"model.stride: {stride} applies to windows only; set model.long_reviews: window or remove it")
        elif isinstance(stride, bool) or not isinstance(stride, int) or not 0 <= stride < recipe.model.max_length - 2:
            problems.append(f"model.stride: expected tokens of overlap between windows, a whole number in "
                            f"[0, max_length - 3], found {stride!r}; e.g. {recipe.model.max_length // 2}")
    if recipe.model.dropout is not None and not (0.0 <= recipe.model.dropout < 1.0):
        problems.append(f"model.dropout: expected a probability in [0, 1) or null, found {recipe.model.dropout}")
    if recipe.model.max_length < 8:
        problems.append(f"model.max_length: expected at least 8 tokens, found {recipe.model.max_length}")
    for key in ("max_train_samples", "max_eval_samples", "max_test_samples"):
        value = getattr(recipe.data, key)
        if value is not None and value < 2:
            problems.append(f"data.{key}: expected at least 2 (one per class) or null, found {value}")
    problems.extend(label_problems(recipe.data))
    for key in ("validation_size", "test_size"):
        value = getattr(recipe.data, key)
        if not (0 < value < 1 or (value >= 1 and float(value).is_integer())):
            problems.append(f"data.{key}: expected a fraction in (0, 1) or a whole count >= 1, found {value}")
    _check_train_values(recipe.train, problems)
    problems.extend(check_encoding(recipe.data.encoding))
    problems.extend(class_weight_problems(recipe.train.get("class_weights"), recipe.data.labels))
    if recipe.data.sample_seed < 0:
        problems.append(f"data.sample_seed: expected an integer >= 0, found {recipe.data.sample_seed}")
    if recipe.eval.ece_bins < 1:
        problems.append(f"eval.ece_bins: expected at least 1, found {recipe.eval.ece_bins}")
    if recipe.eval.baseline not in BASELINES:
        problems.append(f"eval.baseline: expected one of {', '.join(BASELINES)}, found {recipe.eval.baseline!r}")
    problems.extend(also_problems(recipe.data.name, recipe.eval.also))
    spec = method_spec(recipe.method_name)
    for key, value in spec.fixed.items():
        if key in recipe.method and str(recipe.method[key]) != value:
            problems.append(f"method.{key}: peftsent sets this to {value!r}; remove it from the recipe")


def _check_train_values(train: dict, problems: list[str]) -> None:
    """Ranges TrainingArguments only checks once training starts (or never)."""
    positive = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
    for key in positive:
        if isinstance(train.get(key), int) and train[key] < 1:
            problems.append(f"train.{key}: expected an integer >= 1, found {train[key]}")
    if isinstance(train.get("learning_rate"), (int, float)) and train["learning_rate"] < 0:
        problems.append(f"train.learning_rate: expected >= 0 (per optimizer step), found {train['learning_rate']}")
    if isinstance(train.get("seed"), int) and not 0 <= train["seed"] < 2**32:
        problems.append(f"train.seed: expected an integer in [0, 2**32), found {train['seed']}")
    metric = train.get("metric_for_best_model")
    if metric is not None and str(metric).removeprefix("eval_") not in SELECTION_METRICS:
        problems.append(f"train.metric_for_best_model: expected one of {', '.join(SELECTION_METRICS)} "
                        f"(validation metrics), found {metric!r}")
    if train.get("push_to_hub"):
        problems.append("train.push_to_hub: runs are written locally; merge the run and upload merged/ "
                        "with huggingface_hub instead")
    if not train.get("output_dir"):
        problems.append("train.output_dir: expected a directory path such as runs/NAME")
    _check_early_stopping(train, problems)
    _check_save_and_eval(train, problems)


def _check_early_stopping(train: dict, problems: list[str]) -> None:
    patience, threshold = train.get("early_stopping_patience"), train.get("early_stopping_threshold")
    if isinstance(threshold, (int, float)) and threshold < 0:
        problems.append(f"train.early_stopping_threshold: expected >= 0 (in units of the selection metric), "
                        f"found {threshold}")
    if patience is None:
        return
    if isinstance(patience, int) and patience < 1:
        problems.append(f"train.early_stopping_patience: expected an integer >= 1 (evaluations) or null, "
                        f"found {patience}")
    if not train.get("load_best_model_at_end") or train.get("eval_strategy") in ("no", None):
        problems.append("train.early_stopping_patience: needs train.load_best_model_at_end: true and an "
                        "eval_strategy (epoch or steps, with eval_steps) to compare evaluations")


def _default_output_dir(source: str) -> str:
    stem = Path(source).stem if source != "<dict>" else "run"
    return str(Path("runs") / stem)


def _pair_save_and_eval(written: dict, train: dict) -> None:
    """Keep the best checkpoint possible (``load_best_model_at_end``, on by default): a checkpoint at every
    evaluation. Where the recipe wrote one side only, the other follows it: ``save_strategy: steps`` alone makes
    ``eval_strategy`` steps, ``save_steps: 50`` alone makes ``eval_steps`` 50, and the other way round; neither step count written, both
    take transformers' ``save_steps`` default (500). Where it
    wrote both and they disagree, :func:`_check_save_and_eval` says so in these keys."""
    if not train.get("load_best_model_at_end") or train.get("save_strategy") == "best":
        return
    for key, other in (("save_strategy", "eval_strategy"), ("save_steps", "eval_steps")):
        if key in written and other not in written:
            train[other] = written[key]
        elif other in written and key not in written:
            train[key] = written[other]
    if train.get("save_strategy") == "steps" and not {"save_steps", "eval_steps"} & set(written):
        from transformers import TrainingArguments  # otherwise evaluations every logging_steps, saves every 500

        train["save_steps"] = train["eval_steps"] = TrainingArguments.save_steps


def _check_save_and_eval(train: dict, problems: list[str]) -> None:
    """The pairing transformers requires for ``load_best_model_at_end``, in the recipe's keys."""
    if not train.get("load_best_model_at_end") or train.get("save_strategy") == "best":
        return
    save, evaluate = train.get("save_strategy"), train.get("eval_strategy")
    if save != evaluate:
        problems.append(f"train.save_strategy: {save} and train.eval_strategy: {evaluate} differ; peftsent keeps the "
                        f"best checkpoint (train.load_best_model_at_end: true), so every evaluation needs a "
                        f"checkpoint: write one of them only (the other follows) or the same value in both, or set "
                        f"train.load_best_model_at_end: false")
    elif save == "steps":
        save_steps, eval_steps = train.get("save_steps"), train.get("eval_steps")
        if (isinstance(save_steps, int) and isinstance(eval_steps, int) and eval_steps > 0
                and save_steps % eval_steps):
            problems.append(f"train.save_steps: {save_steps} is not a multiple of train.eval_steps: {eval_steps}; "
                            f"the best checkpoint can only be one that was saved: set train.save_steps equal to "
                            f"train.eval_steps (or a multiple of it), or write one of them only (the other follows)")


def _build(raw: dict, source: str) -> Recipe:
    train = {**TRAIN_DEFAULTS, **{k: d for k, (_, d) in TRAIN_EXTRAS.items()}, **(raw.get("train") or {})}
    _pair_save_and_eval(raw.get("train") or {}, train)
    train.setdefault("output_dir", _default_output_dir(source))
    train.setdefault("greater_is_better", greater_is_better(train["metric_for_best_model"]))
    return Recipe(
        model=ModelSection(**raw["model"]),
        data=DataSection(**raw["data"]),
        method=dict(raw["method"]),
        train=train,
        eval=EvalSection(**(raw.get("eval") or {})),
        source=source,
        tune=dict(raw.get("tune") or {}),
    )


def _cuda_problem(spec) -> str | None:
    """Why a CUDA-only method cannot run here (checked before any model is loaded), or None."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return (f"method.name: '{spec.name}' needs a CUDA GPU (bitsandbytes 4-bit NF4 kernels) and this machine has "
                f"none; on CPU use method.name=lora (same adapter, full-precision base)")
    if importlib.util.find_spec("bitsandbytes") is None:
        return f"method.name: '{spec.name}' needs bitsandbytes: pip install -e \".[qlora]\""
    return None


def _fill_method_defaults(recipe: Recipe, problems: list[str], for_training: bool = True) -> None:
    spec = method_spec(recipe.method_name)
    if for_training and spec.needs_cuda and (problem := _cuda_problem(spec)):
        problems.append(problem)
        return
    try:
        recipe.model_type = model_type_of(recipe.model.name)
        arch = arch_spec(recipe.model_type)
    except ModelError as err:
        problems.append(f"model.name: {err}")
        return
    reason = arch.unsupported.get(recipe.method_name)
    if reason:
        problems.append(
            f"method.name: '{recipe.method_name}' does not work with {recipe.model_type} models ({reason}); "
            f"methods that do: {', '.join(supported_methods(arch))}"
        )
        return
    extras = {key: default for key, (_, default) in spec.extra_options.items()}
    chosen = {k: v for k, v in recipe.method.items() if k != "name"}
    recipe.method = {"name": spec.name, **spec.defaults(arch), **extras, **chosen}
    _resolve_module_names(recipe, arch, chosen, problems)


def _resolve_module_names(recipe: Recipe, arch, chosen: dict, problems: list[str]) -> None:
    """Replace symbolic module groups by this model's module names, then check the module lists.

    ``all-linear`` / ``attention`` / ``head`` (registry.MODULE_GROUPS) become explicit names here,
    so the run's saved recipe.yaml names every module and re-loads identically. ``chosen``: the
    method options the recipe itself set (the rest are defaults).
    """
    method = recipe.method
    for key in MODULE_GROUPS:
        if key in method:
            method[key] = expand_module_groups(key, method[key], arch, recipe.model.name)
    targets, feedforward = method.get("target_modules"), method.get("feedforward_modules")
    if isinstance(targets, list) and isinstance(feedforward, list):
        # IA3 scales the input of feedforward modules; peft requires them to be a subset of target_modules
        if "feedforward_modules" not in chosen:  # the default follows the targets the recipe chose
            method["feedforward_modules"] = [m for m in feedforward if m in targets]
        elif outside := [m for m in feedforward if m not in targets]:
            problems.append(
                f"method.feedforward_modules: {', '.join(outside)} not in method.target_modules "
                f"({', '.join(targets)}); feedforward_modules must be a subset of target_modules: "
                f"add them to target_modules, or drop feedforward_modules to get the default"
            )
    saved = method.get("modules_to_save")
    if method_spec(recipe.method_name).config_class and saved is not None:
        missing = [m for m in arch.head_modules if m not in saved]
        if missing:
            problems.append(
                f"method.modules_to_save: must list every newly initialised head module of {recipe.model_type} "
                f"({', '.join(arch.head_modules)}); missing: {', '.join(missing)}; "
                f"or write method.modules_to_save=head to follow whichever model is loaded"
            )


def _check_library_configs(recipe: Recipe, problems: list[str]) -> None:
    """Build TrainingArguments and the peft config once, so their own checks run now."""
    try:
        make_training_args(recipe, output_dir=str(recipe.run_dir))
    except (ValueError, TypeError) as err:
        problems.append(f"train: {err}")
    if method_spec(recipe.method_name).config_class:
        try:
            make_peft_config(recipe)  # prompt sizes and AdaLoRA's total_step are filled when the model is built
        except (ValueError, TypeError) as err:
            problems.append(f"method: {err}")


def resolve_recipe(raw: dict, overrides: typing.Sequence[str] = (), source: str = "<dict>",
                   for_training: bool = True) -> Recipe:
    """Validate a raw recipe mapping (plus overrides) and fill in every default.

    Raises RecipeError listing every problem: unknown or missing keys, wrong
    types, unknown methods, overrides of keys that do not exist, a method the
    model's architecture cannot take, a CUDA-only method, precision, device or
    optimizer setting this machine cannot honour (only when ``for_training``: a
    finished qlora or fp16 run is evaluated and merged on a full-precision base
    anywhere). Loads no model weights and no data.
    """
    problems: list[str] = []
    raw = _apply_overrides({k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}, overrides, problems)
    _check_raw(raw, problems)
    if problems:
        raise RecipeError(problems, source)
    recipe = _build(raw, source)
    _check_values(recipe, problems)
    _fill_method_defaults(recipe, problems, for_training)
    if for_training and not problems:
        problems.extend(hardware_problems(recipe))
    if not problems:
        _check_library_configs(recipe, problems)
    if problems:
        raise RecipeError(problems, source)
    return recipe


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = (), for_training: bool = True) -> Recipe:
    """Read a recipe file, apply ``section.key=value`` overrides, validate and resolve it.

    Raises RecipeError (all problems in one message) if the file is missing or invalid.
    """
    path = Path(path)
    return resolve_recipe(_read_yaml(path), overrides, source=str(path), for_training=for_training)


#: what ``--data`` of eval / analyze may be besides a dataset name or a local data file: a recipe
RECIPE_SUFFIXES = (".yaml", ".yml")
#: the DataSection fields eval / analyze take from the command line (add_data_arguments), as ``data.<key>``
DATA_OPTIONS = ("text_column", "label_column", "encoding", "label_map", "labels")


def data_section(data: str | None, base: DataSection | None = None, **options) -> DataSection:
    """The DataSection of ``eval`` / ``analyze``: ``data`` is a dataset name or local file, a recipe path (its
    ``data`` section) or None (``base``, the run's own data section); ``options`` (:data:`DATA_OPTIONS`; None =
    not given) replace the section's keys, parsed as the command line writes them: ``label_map`` a YAML
    mapping as text, ``labels`` comma-separated names (or lists and mappings as given).

    Raises RecipeError listing every problem: an unknown option, a data section with unknown keys, a
    label map that is not a mapping, an unknown encoding.
    """
    problems: list[str] = []
    unknown = [key for key in options if key not in DATA_OPTIONS]
    if unknown:
        raise RecipeError(f"unknown data option {', '.join(unknown)}; expected {', '.join(DATA_OPTIONS)}")
    given = {key: value for key, value in options.items() if value is not None}
    if isinstance(given.get("label_map"), str):
        parsed = parse_value(given["label_map"])
        if not isinstance(parsed, dict):
            problems.append(f"--label-map: expected a YAML mapping of raw label -> class name, e.g. "
                            f"'{{pos: positive, neg: negative}}', found {given['label_map']!r}")
        given["label_map"] = parsed
    if isinstance(given.get("labels"), str):
        given["labels"] = [name.strip() for name in given["labels"].split(",") if name.strip()]
    source = "<command line>"
    if data is not None and Path(data).suffix.lower() in RECIPE_SUFFIXES:
        source = data
        raw = _read_yaml(Path(data))
        values = raw.get("data")
        if values is None:
            raise RecipeError("data: missing section (required): --data names a recipe, whose data section is "
                              "read", source)
        _check_section("data", values, raw, problems)
        if problems:
            raise RecipeError(problems, source)
        section = DataSection(**values)
    elif data is not None:
        section = DataSection(name=data)
    elif base is not None:
        section = base
    else:
        raise RecipeError("no data: name a dataset, local file or recipe with --data", source)
    section = dataclasses.replace(section, **given)
    for key, value in given.items():
        problem = _type_problem(f"data.{key}", value, _dataclass_schema(DataSection)[key])
        if problem:
            problems.append(problem)
    if not problems:
        problems.extend(check_encoding(section.encoding))
    if problems:
        raise RecipeError(problems, source)
    return section
