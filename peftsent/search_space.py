"""The search space of a recipe's ``tune:`` section: which recipe keys a study searches, over which distribution.

Validated here, below the recipe (``peftsent.recipe`` checks a recipe's ``tune`` section with
:func:`parse_tune` when it loads the recipe); searched by ``peftsent.tune`` with Optuna. Cheap: loads nothing.
See ``peftsent.tune`` for the section's format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from peftsent.errors import did_you_mean
from peftsent.metrics import SELECTION_METRICS, greater_is_better

#: distributions a search key may take, with the shape of their arguments
DISTRIBUTIONS = {
    "log_uniform": "[low, high], 0 < low < high",
    "uniform": "[low, high], low < high",
    "int": "[low, high] or [low, high, step], whole numbers, low < high",
    "choice": "[a, b, ...], at least two different values",
}
#: settings of the tune section (every other key is a dotted search key)
SETTINGS = ("metric", "sampler_seed", "pruner", "n_startup_trials", "n_warmup_steps")
PRUNERS = ("median", "none")
#: keys a study cannot search: the method decides which keys exist; each trial has its own directory
FIXED_KEYS = {"method.name": "one study searches one method; run a study per method",
              "train.output_dir": "each trial trains into OUT/trials/trial-<n>"}


@dataclass(frozen=True)
class SearchParam:
    """One searched recipe key: ``key`` (``section.name``), ``kind`` (a DISTRIBUTIONS key) and its ``args``."""

    key: str
    kind: str
    args: tuple

    def _encoded(self) -> dict:
        """choice: optuna's categorical values (scalars as they are, lists/mappings as YAML text) -> option."""
        scalar = all(v is None or isinstance(v, (bool, int, float, str)) for v in self.args)
        return {(v if scalar else yaml_text(v)): v for v in self.args}

    def suggest(self, trial) -> Any:
        """Sample this key's value for an optuna ``trial``."""
        if self.kind == "choice":
            encoded = self._encoded()
            return encoded[trial.suggest_categorical(self.key, list(encoded))]
        if self.kind == "int":
            low, high, *step = self.args
            return trial.suggest_int(self.key, low, high, step=step[0] if step else 1)
        return trial.suggest_float(self.key, *self.args, log=self.kind == "log_uniform")

    def decode(self, stored: Any) -> Any:
        """The recipe value of an optuna parameter value (``trial.params[key]``)."""
        return self._encoded()[stored] if self.kind == "choice" else stored

    def corners(self) -> list:
        """Values that bound the range (every option of a choice): each must make a valid recipe."""
        return list(self.args) if self.kind == "choice" else list(self.args[:2])


@dataclass(frozen=True)
class TuneSpec:
    """A validated ``tune`` section."""

    params: tuple[SearchParam, ...]
    metric: str
    """validation metric name as classification_metrics / the Trainer report it (``accuracy``, ``loss``)"""
    sampler_seed: int
    pruner: str = "median"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    raw: dict = field(default_factory=dict, compare=False)

    @property
    def direction(self) -> str:
        """``minimize`` for loss, log_loss and ece, else ``maximize``."""
        return "maximize" if greater_is_better(self.metric) else "minimize"

    @property
    def report_key(self) -> str:
        """The key of the metric in metrics.json's ``validation`` (the Trainer's ``loss`` is ``log_loss`` there)."""
        return "log_loss" if self.metric == "loss" else self.metric


def yaml_text(value: Any) -> str:
    """``value`` as one line of YAML, as an override takes it (``1.0e-05``, ``[query, value]``, ``'no'``)."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("...\n").strip()


def _is_number(value: Any, whole: bool = False) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if whole else isinstance(value, (int, float))


def _distribution_problem(where: str, spec: Any) -> tuple[str | None, SearchParam | None]:
    shapes = "; ".join(f"{{{kind}: {shape}}}" for kind, shape in DISTRIBUTIONS.items())
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        return f"{where}: expected one distribution, one of {shapes}; found {spec!r}", None
    (kind, args), key = next(iter(spec.items())), where.removeprefix("tune: ")
    if not isinstance(args, list):
        return f"{where}: {kind} expects {DISTRIBUTIONS[kind]}, found {args!r}", None
    if kind == "choice":
        texts = [yaml_text(a) for a in args]
        if len(set(texts)) < 2:
            return (f"{where}: choice needs at least two different values, found {args!r}"
                    f"{'; an empty choice searches nothing' if not args else '; set the key in the recipe instead'}"), None
        return None, SearchParam(key, kind, tuple(args))
    whole = kind == "int"
    lengths = (2, 3) if whole else (2,)
    if len(args) not in lengths or not all(_is_number(a, whole) for a in args):
        return f"{where}: {kind} expects {DISTRIBUTIONS[kind]}, found {args!r}", None
    low, high = args[0], args[1]
    if not low < high:
        return f"{where}: empty range [{low}, {high}]: expected low < high", None
    if kind == "log_uniform" and low <= 0:
        return f"{where}: log_uniform needs 0 < low, found low = {low}; use uniform for ranges that reach 0", None
    if whole and len(args) == 3 and not 1 <= args[2] <= high - low:
        return f"{where}: int step {args[2]} must be in [1, high - low = {high - low}]", None
    return None, SearchParam(key, kind, tuple(args))


def _metric_problem(metric: Any) -> tuple[str | None, str]:
    if not isinstance(metric, str):
        return f"tune.metric: expected a validation metric name, found {metric!r}", ""
    name = metric.removeprefix("eval_").removeprefix("validation.").removeprefix("validation_")
    if name.startswith(("test", "eval_test")):
        return (f"tune.metric: {metric!r} is a test-split metric; the test split is only ever reported, never used "
                f"to choose: use a validation metric ({', '.join(SELECTION_METRICS)})"), ""
    if name not in SELECTION_METRICS:
        return f"tune.metric: expected one of {', '.join(SELECTION_METRICS)} (validation metrics), found {metric!r}", ""
    return None, name


def parse_tune(section: Any, sections: tuple[str, ...], schema_of: Callable[[str], dict | None],
               default_metric: str, default_seed: int) -> tuple[TuneSpec | None, list[str]]:
    """Validate a raw ``tune`` section; returns (spec or None, problems).

    ``sections``: the recipe's section names (``peftsent.recipe.SECTIONS``); ``schema_of(section_name)`` gives
    the valid keys of a recipe section (None when unknown, e.g. the method is misspelled). Problems name the key: unknown search keys (with the closest valid key),
    distributions of the wrong shape, empty ranges, a test-split metric, bad settings. Cheap: loads nothing.
    """
    if not isinstance(section, dict):
        return None, [f"tune: expected a mapping of search keys and settings, found {type(section).__name__}"]
    problems, params = [], []
    settings = {"metric": default_metric, "sampler_seed": default_seed, "pruner": "median",
                "n_startup_trials": 5, "n_warmup_steps": 0}
    for key, value in section.items():
        key = str(key)
        if "." not in key:
            if key not in SETTINGS:
                problems.append(f"tune.{key}: unknown setting; {did_you_mean(key, SETTINGS)} "
                                f"(search keys are dotted recipe keys, e.g. train.learning_rate)")
            else:
                settings[key] = value
            continue
        where = f"tune: {key}"
        part, _, name = key.partition(".")
        if part not in sections:
            problems.append(f"{where}: unknown section '{part}'; {did_you_mean(part, sections)}")
            continue
        schema = schema_of(part)
        if schema is not None and name not in schema:
            problems.append(f"{where}: {key} does not exist; {did_you_mean(name, schema)}")
            continue
        if key in FIXED_KEYS:
            problems.append(f"{where}: cannot be searched: {FIXED_KEYS[key]}")
            continue
        problem, param = _distribution_problem(where, value)
        problems += [problem] if problem else []
        params += [param] if param else []
    problem, metric = _metric_problem(settings["metric"])
    if "metric" in section:  # a bad default (train.metric_for_best_model) is reported by the train section
        problems += [problem] if problem else []
    if settings["pruner"] not in PRUNERS:
        problems.append(f"tune.pruner: expected one of {', '.join(PRUNERS)}, found {settings['pruner']!r}")
    for key in ("sampler_seed", "n_startup_trials", "n_warmup_steps"):
        if not _is_number(settings[key], whole=True) or settings[key] < 0:
            problems.append(f"tune.{key}: expected a whole number >= 0, found {settings[key]!r}")
    if not params and not any(p.startswith("tune: ") for p in problems):
        problems.append("tune: no search keys; add e.g. train.learning_rate: {log_uniform: [1.0e-5, 3.0e-3]}")
    if problems:
        return None, problems
    spec = TuneSpec(tuple(params), metric, settings["sampler_seed"], settings["pruner"],
                    settings["n_startup_trials"], settings["n_warmup_steps"], raw=dict(section))
    return spec, []
