"""``python -m peftsent.compare``: one table of recipes side by side on equal budgets.

Rows come from finished run directories, or from recipes (missing runs are
trained, finished runs with the same resolved recipe reused). With ``--seeds N``
each recipe runs with N seeds and metric cells show mean ± std (sample std).
Runs are compared like with like: runs whose data fingerprints (the reviews and
labels of their splits), label sets or test splits differ are refused, naming the
runs and what differs, unless ``--separate`` asks for one table per kind of run.
Runs of the same data whose budget (epochs, steps, max length) differs go into
separate tables, each headed by its budget. Rows state their seeds; a run that
repeats another's recipe and seed is counted once. With ``--baseline tfidf`` (or
when a compared recipe sets ``eval.baseline: tfidf``) every table gets a row for
TF-IDF + logistic regression fitted on the same training reviews (peftsent.baseline).
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import peftsent.baseline as baseline_module
import peftsent.train as train_module  # through the module: tests replace train_module.train
from peftsent.baseline import DESCRIPTION, NAME, is_current
from peftsent.cli import check_out_dir, make_parser, run_cli
from peftsent.errors import PeftsentError, RunDirError
from peftsent.merge import PARITY_FILE
from peftsent.metrics import greater_is_better
from peftsent.recipe import BASELINES, load_recipe
from peftsent.registry import ID2LABEL
from peftsent.rundir import (
    DATA_FINGERPRINT_FILE,
    RECIPE_FILE,
    Run,
    is_finished_run,
    open_run,
    resource_errors,
)

EPILOG = """examples:
  python -m peftsent.compare runs/quick/full runs/quick/lora runs/quick/ia3
  python -m peftsent.compare --recipes recipes/quick/full.yaml recipes/quick/lora.yaml recipes/quick/ia3.yaml
  python -m peftsent.compare --recipes recipes/quick/lora.yaml recipes/quick/ia3.yaml --seeds 3 --out runs/compare-3seeds
  python -m peftsent.compare runs/quick/full runs/quick/lora --baseline tfidf
  python -m peftsent.compare runs/imdb/lora runs/sst2/lora --separate

Runs must share their data (the reviews and labels of every split, by fingerprint), label set and test
split, or compare refuses them (exit 2) naming what differs; --separate puts each kind in its own table.

Seed k > 0 of a recipe trains into <train.output_dir>-seed<k> with train.seed + k; with --set
overrides the runs go to <out>/runs/<recipe name>[-seed<k>] instead, leaving the recipe's own run alone.
Outputs: a table here, and compare.md, compare.csv, compare.png in --out (default runs/compare).
"""

#: (column title, function of the run list) in table order
METRIC_COLUMNS = [
    ("val acc", ("validation", "accuracy")),
    ("val F1", ("validation", "f1")),
    ("test acc", ("test", "accuracy")),
    ("test F1", ("test", "f1")),
]


@dataclass
class RunRecord:
    """What compare needs of one finished run."""

    path: Path
    recipe: dict
    metrics: dict
    checkpoint_bytes: int
    parity: dict | None
    fingerprint: str | None = None
    """the run's data fingerprint (``data-fingerprint.txt``, :func:`peftsent.data.data_fingerprint`); None for
    a run written before train kept it"""
    labels: tuple[str, ...] = tuple(ID2LABEL[i] for i in sorted(ID2LABEL))
    """class names in class-id order (:func:`label_set`)"""

    @property
    def budget(self) -> tuple:
        """What must be equal for rows to share a table: data, splits, subsets, epochs/steps, max length, then
        the data fingerprint and the label set (:attr:`like`)."""
        data, train = self.recipe["data"], self.recipe["train"]
        return (
            data["name"], data.get("validation_file"), data.get("test_file"), data["max_train_samples"],
            data["max_eval_samples"], data["max_test_samples"], data["sample_seed"],
            train.get("num_train_epochs"), train.get("max_steps", -1), self.recipe["model"]["max_length"],
            self.fingerprint, self.labels,
        )

    @property
    def test_split(self) -> tuple:
        """Where the test reviews come from: data, test file, test share, subset size and seed, and how many."""
        data = self.recipe["data"]
        return (data["name"], data.get("test_file"), data.get("test_size"), data["max_test_samples"],
                data["sample_seed"], (self.metrics.get("sizes") or {}).get("test"))

    @property
    def like(self) -> dict[str, object]:
        """What runs in one comparison must share (see :func:`check_like_with_like`): aspect -> value."""
        return {"data fingerprint": self.fingerprint, "label set": self.labels, "test split": self.test_split}

    @property
    def seed(self):
        return self.recipe["train"].get("seed")

    @property
    def identity(self) -> str:
        """The recipe without its seed and output directory: runs of one recipe across seeds share it."""
        train = {k: v for k, v in self.recipe["train"].items() if k not in {"seed", "output_dir"}}
        return repr(sorted({**self.recipe, "train": train}.items(), key=lambda kv: kv[0]))


@dataclass
class Row:
    """One table row: the runs of one recipe (one per seed)."""

    runs: list[RunRecord] = field(default_factory=list)
    repeats: list[RunRecord] = field(default_factory=list)
    """runs with the recipe and seed of a run in ``runs``: shown, never counted as seeds"""

    def values(self, path: tuple[str, ...]) -> list[float]:
        out = []
        for run in self.runs:
            value = run.metrics
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, (int, float)):
                out.append(float(value))
        return out


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.safetensors"))


def read_run(path: str | Path) -> RunRecord:
    """Load a finished run's recipe, metrics, checkpoint size and merge parity. Raises RunDirError."""
    import json

    import yaml

    run = open_run(path)
    parity_file = run.path / PARITY_FILE
    fingerprint_file = run.path / DATA_FINGERPRINT_FILE
    try:
        recipe = yaml.safe_load((run.path / RECIPE_FILE).read_text())
        record = RunRecord(
            path=run.path,
            recipe=recipe,
            metrics=run.metrics(),
            checkpoint_bytes=_dir_bytes(run.weights),
            parity=json.loads(parity_file.read_text()) if parity_file.is_file() else None,
            fingerprint=fingerprint_file.read_text().strip() if fingerprint_file.is_file() else None,
            labels=label_set(recipe, run.weights),
        )
        _ = (record.budget, row_cells(Row([record])))  # read every field the table needs, now
    except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as err:
        raise RunDirError(f"{run.path}: damaged run directory ({type(err).__name__}: {err}); "
                          f"its recipe.yaml / metrics.json are not as train writes them") from None
    return record


def label_set(recipe: dict, weights: Path) -> tuple[str, ...]:
    """A run's class names in class-id order: the recipe's ``data.labels`` (saved by train), else the
    ``id2label`` of the weights' config.json (a full run), else peftsent's binary names (negative, positive)."""
    import json

    labels = (recipe.get("data") or {}).get("labels")
    if labels:
        return tuple(str(name) for name in labels)
    config = weights / "config.json"
    if config.is_file():
        id2label = json.loads(config.read_text()).get("id2label") or {}
        if id2label:
            return tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    return tuple(ID2LABEL[i] for i in sorted(ID2LABEL))


class NotComparableError(PeftsentError):
    """Runs of different data, label sets or test splits were asked for in one comparison."""


def _shown(aspect: str, value) -> str:
    if value is None:
        return "not recorded"
    if aspect == "data fingerprint":
        return value[:12]
    if aspect == "label set":
        return ", ".join(value)
    name, test_file, test_size, max_test, seed, count = value
    source = f"file {test_file}" if test_file else f"{test_size} of {name} (subset seed {seed})"
    limit = f", at most {max_test:,}" if max_test is not None else ""
    return f"{source}{limit}, {count if count is not None else '?'} reviews"


def check_like_with_like(records: list[RunRecord]) -> None:
    """Raise :class:`NotComparableError` unless every run shares its data fingerprint, label set and test
    split (:attr:`RunRecord.like`); the message names each differing aspect and the runs of each value.
    A run without a recorded fingerprint (older than this check) is compared on the other aspects only."""
    problems = []
    for aspect in ("data fingerprint", "label set", "test split"):
        values: dict[object, list[str]] = {}
        for record in records:
            value = record.like[aspect]
            if value is None:
                continue
            values.setdefault(value, []).append(str(record.path))
        if len(values) > 1:
            listed = "; ".join(f"{_shown(aspect, value)}: {', '.join(paths)}" for value, paths in values.items())
            why = {"data fingerprint": " (the reviews or labels of their splits differ, e.g. a data file that "
                                       "changed between runs)"}.get(aspect, "")
            problems.append(f"{aspect}s differ{why}: {listed}")
    if problems:
        raise NotComparableError("these runs are not like with like, so their metrics cannot share a table: "
                                 + "; ".join(problems) + ". Compare runs of the same data, or pass --separate "
                                 "for one table per kind of run")


# ---------------------------------------------------------------- runs from recipes


def seeded_recipe(path: str, seed_index: int, overrides: list[str], out: Path):
    """The recipe at ``path`` for seed index k: seed + k, output_dir suffixed ``-seed<k>`` for k > 0.

    With ``overrides`` the runs are not the recipe's own: they go to ``<out>/runs/<recipe name>``.
    """
    base = load_recipe(path, overrides)
    output_dir = str(out / "runs" / Path(path).stem) if overrides else base.train["output_dir"]
    if seed_index == 0 and not overrides:
        return base
    seeded = [f"train.seed={base.train['seed'] + seed_index}"] if seed_index else []
    suffix = f"-seed{seed_index}" if seed_index else ""
    return load_recipe(path, [*overrides, *seeded, f"train.output_dir={output_dir}{suffix}"])


def is_reusable(recipe) -> bool:
    """True if the recipe's run directory holds a finished run of the same resolved recipe.

    ``eval.baseline`` is left out of the comparison: it does not change the trained run, and compare fits
    the baseline itself when a run lacks it. Raises PeftsentError if it holds a run of a different recipe
    (nothing is overwritten).
    """
    import yaml

    def trained(raw: dict) -> dict:
        (raw.get("eval") or {}).pop("baseline", None)
        if recipe.data.labels is None:  # the run saved the label set it inferred from the data
            (raw.get("data") or {}).pop("labels", None)
        return raw

    run_dir = recipe.run_dir
    if not is_finished_run(run_dir):
        return False
    # re-resolved, so a run saved before a recipe key was added compares with that key's default
    saved = trained(yaml.safe_load(yaml.safe_dump(Run(run_dir).recipe().to_dict())))
    if saved != trained(yaml.safe_load(yaml.safe_dump(recipe.to_dict()))):
        raise PeftsentError(f"{run_dir} holds a run of a different recipe ({recipe.source}); move it away, "
                            f"or compare with another --out")
    return True


def ensure_run(recipe) -> Path:
    """Reuse the recipe's finished run (see :func:`is_reusable`), else train it."""
    if is_reusable(recipe):
        print(f"peftsent.compare: reusing {recipe.run_dir}", file=sys.stderr)
        return recipe.run_dir
    print(f"peftsent.compare: training {recipe.source} into {recipe.run_dir}", file=sys.stderr)
    return train_module.train(recipe)


# ---------------------------------------------------------------- table


def group_rows(records: list[RunRecord]) -> dict[tuple, list[Row]]:
    """Budget -> rows; within a budget, runs of the same recipe (one per seed) form one row. A run with the
    recipe and seed of a run already in the row is a repeat, not another seed: it goes to the row's
    ``repeats`` and into no statistic."""
    groups: dict[tuple, dict[str, Row]] = {}
    for record in records:
        row = groups.setdefault(record.budget, {}).setdefault(record.identity, Row())
        if any(run.seed == record.seed for run in row.runs):
            row.repeats.append(record)
        else:
            row.runs.append(record)
    return {budget: list(rows.values()) for budget, rows in groups.items()}


def _repeat_note(rows: list[Row]) -> str:
    """A sentence naming the runs counted once because they repeat another run's recipe and seed ('' if none)."""
    repeats = [f"{r.path} (seed {r.seed}, as {next(x.path for x in row.runs if x.seed == r.seed)})"
               for row in rows for r in row.repeats]
    return (f"\nCounted once, as repeats of the same recipe and seed (not another seed): {'; '.join(repeats)}.\n"
            if repeats else "")


def _mean_std(values: list[float], digits: int = 4) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def row_cells(row: Row) -> dict[str, str]:
    """The table cells of one row (strings), in column order."""
    first = row.runs[0]
    params = first.metrics["parameters"]
    parities = [r.parity["max_abs_logit_diff"] for r in row.runs if r.parity]
    cells = {
        "recipe": Path(first.metrics.get("recipe", first.path.name)).as_posix(),
        "method": first.recipe["method"]["name"],
        "base model": first.recipe["model"]["name"],
        "seeds": f"{len(row.runs)} ({', '.join(str(r.seed) for r in row.runs)})",
        "adapter params": f"{params['adapter']:,}",
        "head params": f"{params['head']:,}",
        "trainable %": f"{params['trainable_percent']:.3g}",
        "checkpoint": _human_bytes(statistics.mean(r.checkpoint_bytes for r in row.runs)),
    }
    for title, path in METRIC_COLUMNS:  # F1: the positive class's for two classes, macro-F1 for more
        cells[title] = _mean_std(row.values(path) or row.values((path[0], "macro_f1") if path[1] == "f1" else path))
    for name in first.metrics.get("also", {}):  # eval.also: out-of-domain test accuracy
        cells[f"{name} test acc"] = _mean_std(row.values(("also", name, "accuracy")))
    cells["train s"] = _mean_std(row.values(("timing", "train_seconds")), 0)
    cells["train samples/s"] = _mean_std(row.values(("timing", "train_samples_per_second")), 2)
    cells["peak RSS MiB"] = _mean_std(row.values(("memory", "peak_rss_mib")), 0)
    cells["eval samples/s"] = _mean_std(row.values(("timing", "test_samples_per_second")), 1)
    cells["merge max abs Δlogit"] = f"{max(parities):.2g}" if parities else "not merged"
    return cells


def describe_budget(budget: tuple) -> str:
    name, val_file, test_file, n_train, n_val, n_test, seed, epochs, max_steps, max_length = budget[:10]
    fingerprint, labels = budget[10:12] if len(budget) >= 12 else (None, None)
    steps = f"{max_steps} steps" if max_steps and max_steps > 0 else f"{epochs:g} epoch(s)"
    subset = lambda n: "all" if n is None else f"{n:,}"  # noqa: E731
    files = f" (validation {val_file}, test {test_file})" if val_file or test_file else ""
    fingerprinted = f" (fingerprint {fingerprint[:12]})" if fingerprint else ""
    classes = f"; classes {', '.join(labels)}" if labels else ""
    return (f"data {name}{files}{fingerprinted}: train {subset(n_train)}, validation {subset(n_val)}, test {subset(n_test)} "
            f"reviews (subset seed {seed}); {steps}; max length {max_length} tokens{classes}")


def baseline_cells(baseline: dict, columns: list[str]) -> dict[str, str]:
    """The table cells of a TF-IDF baseline (see peftsent.baseline), in ``columns`` order; "—" where a
    column has no meaning for a linear model. Its "train s" is the fit time (vectorizer + logistic regression)."""
    def metric(split, name):
        value = (baseline.get(split) or {}).get(name)
        if value is None and name == "f1":  # more than two classes: macro-F1, as the fine-tune rows
            value = (baseline.get(split) or {}).get("macro_f1")
        return "n/a" if value is None else f"{value:.4f}"

    known = {
        "recipe": "baseline: TF-IDF + logistic regression", "method": "tfidf-logreg", "base model": "none (linear)",
        "seeds": "1", "val acc": metric("validation", "accuracy"), "val F1": metric("validation", "f1"),
        "test acc": metric("test", "accuracy"), "test F1": metric("test", "f1"),
        "train s": f"{baseline['fit_seconds']:.0f}",
        "train samples/s": f"{baseline['train_reviews'] / max(baseline['fit_seconds'], 1e-9):.2f}",
    }
    return {column: known.get(column, "—") for column in columns}


def _baseline_note(baseline: dict, rows: list[Row]) -> str:
    """A sentence under a table: what the baseline row is, and how each row compares with it on the test
    split's selection metric (``train.metric_for_best_model`` of the first row): "beats" only beyond the test
    split's noise (McNemar's exact test, :func:`peftsent.baseline.verdict`, for one-seed rows with per-review
    predictions)."""
    note = (f"Baseline row: {DESCRIPTION} (C={baseline['C']:g} chosen on validation, {baseline['features']:,} "
            f"features), fitted on the same {baseline['train_reviews']:,} training reviews in "
            f"{baseline['fit_seconds']:.1f} s.")
    first = rows[0].runs[0]
    metric = str(first.recipe["train"].get("metric_for_best_model") or "accuracy").removeprefix("eval_")
    if (baseline.get("test") or {}).get(metric) is None:
        metric = "accuracy"
    linear = (baseline.get("test") or {}).get(metric)
    if linear is None:
        return note
    kinds: dict[str, list[str]] = {"beats": [], "ahead": [], "behind": []}
    for row in rows:
        values = row.values(("test", metric))
        if not values:
            continue
        better = statistics.mean(values) > linear if greater_is_better(metric) else statistics.mean(values) < linear
        paired = baseline_module.paired_predictions(
            row.runs[0].path, first.recipe["data"]["name"], "test",
            (baseline.get("predicted") or {}).get("test")) if len(row.runs) == 1 else None
        kind, p = baseline_module.verdict(better, paired)
        name = row_cells(row)["recipe"] + (f" (McNemar p = {p:.2g})" if p is not None else "")
        kinds[kind].append(name)
    note += f" On test {metric} ({linear:.4f}):"
    if kinds["beats"]:
        note += f" beyond the test split's noise above it: {', '.join(kinds['beats'])}."
    if kinds["ahead"]:
        note += f" above it, but within the noise (or untested): {', '.join(kinds['ahead'])}."
    if kinds["behind"]:
        note += f" not above it: {', '.join(kinds['behind'])}."
    return note


def markdown_table(rows: list[Row], baseline: dict | None = None) -> str:
    cells = [row_cells(row) for row in rows]
    columns = list(dict.fromkeys(col for c in cells for col in c))  # rows may differ in eval.also columns
    if baseline is not None:
        cells.append(baseline_cells(baseline, columns))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(c.get(col, "n/a") for col in columns) + " |" for c in cells]
    return "\n".join(lines)


def write_csv(groups: dict[tuple, list[Row]], path: Path, baselines: dict[tuple, dict] | None = None) -> None:
    """One line per row, with the budget as a column; a baseline row closes each budget that has one."""
    baselines = baselines or {}
    lines = []
    for budget, rows in groups.items():
        cells = [row_cells(row) for row in rows]
        columns = list(dict.fromkeys(col for c in cells for col in c))
        if budget in baselines:
            cells.append(baseline_cells(baselines[budget], columns))
        lines += [{"budget": describe_budget(budget), **c} for c in cells]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for line in lines for k in line)), restval="n/a")
        writer.writeheader()
        writer.writerows(lines)


def plot(groups: dict[tuple, list[Row]], path: Path, baselines: dict[tuple, dict] | None = None) -> None:
    """Test accuracy against trainable parameters (log x), one point per recipe, error bars across seeds;
    each table's TF-IDF baseline (if any) as a dashed horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (budget, rows) in enumerate(groups.items()):
        for row in rows:
            accuracy = row.values(("test", "accuracy"))
            if not accuracy:
                continue
            x = row.runs[0].metrics["parameters"]["trainable"]
            std = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
            label = f"{row.runs[0].recipe['method']['name']}" + (f" (table {index + 1})" if len(groups) > 1 else "")
            ax.errorbar(x, statistics.mean(accuracy), yerr=std, fmt="o", capsize=4, label=label)
            ax.annotate(label, (x, statistics.mean(accuracy)), textcoords="offset points", xytext=(6, 4), fontsize=8)
        linear = ((baselines or {}).get(budget) or {}).get("test", {}).get("accuracy")
        if linear is not None:
            where = f" (table {index + 1})" if len(groups) > 1 else ""
            ax.axhline(linear, linestyle="--", color=f"C{index}", alpha=0.7,
                       label=f"TF-IDF + LR baseline{where}: {linear:.4f}")
    if baselines:
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("peftsent compare: test accuracy vs trainable parameters")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def group_baselines(groups: dict[tuple, list[Row]], requested: str = "none") -> dict[tuple, dict]:
    """Budget -> TF-IDF baseline, for every budget where ``requested`` is ``tfidf`` or a run's recipe sets
    ``eval.baseline: tfidf``. A run's stored baseline (metrics.json) is reused when its settings are current;
    otherwise it is fitted on the splits of the first run's data section (same reviews for every row)."""
    out = {}
    for budget, rows in groups.items():
        records = [run for row in rows for run in row.runs]
        if requested != NAME and not any(r.recipe.get("eval", {}).get("baseline") == NAME for r in records):
            continue
        stored = next((r.metrics["baseline"] for r in records if is_current(r.metrics.get("baseline"))), None)
        if stored is None:
            recipe = open_run(records[0].path).recipe()
            print(f"peftsent.compare: fitting the TF-IDF baseline on {describe_budget(budget)}", file=sys.stderr)
            stored = baseline_module.baseline_for(recipe.data, recipe.eval.ece_bins)
        out[budget] = stored
    return out


def compare(run_dirs: list[str] = (), recipes: list[str] = (), seeds: int = 1, out: str = "runs/compare",
            overrides: list[str] = (), baseline: str = "none", separate: bool = False) -> dict:
    """Build the comparison; returns {"markdown": str, "out": Path, "groups": {budget: [Row]},
    "baselines": {budget: baseline dict}}.

    Trains the recipe runs that are missing (``seeds`` per recipe). ``baseline``: ``tfidf`` adds a
    TF-IDF + logistic-regression row to every table (see :func:`group_baselines`). Runs of different data
    fingerprints, label sets or test splits raise :class:`NotComparableError` (the given run directories before
    any training, the trained ones after) unless ``separate``: then each kind gets its own table. Raises
    PeftsentError/RecipeError for bad inputs before any training starts.
    """
    if baseline not in BASELINES:
        raise PeftsentError(f"--baseline {baseline}: expected one of {', '.join(BASELINES)}")
    if not run_dirs and not recipes:
        raise PeftsentError("nothing to compare: give run directories and/or --recipes")
    if seeds < 1:
        raise PeftsentError(f"--seeds {seeds}: expected at least 1")
    unique = list(dict.fromkeys(str(Path(p).resolve()) for p in run_dirs))  # a run named twice counts once
    records = [read_run(path) for path in unique]
    if not separate:
        check_like_with_like(records)
    out_dir = Path(out)
    check_out_dir(out_dir)
    planned = [seeded_recipe(path, k, list(overrides), out_dir) for path in recipes for k in range(seeds)]
    clashes = [str(d) for d, n in Counter(str(r.run_dir) for r in planned).items() if n > 1]
    if clashes:
        raise PeftsentError(f"several recipes would train into {', '.join(clashes)} (same file name or "
                            f"train.output_dir); rename a recipe file or give each its own train.output_dir")
    for recipe in planned:  # every recipe checked before the first one trains
        if not is_reusable(recipe):
            train_module.preflight(recipe)
    records += [read_run(ensure_run(recipe)) for recipe in planned]
    if not separate:
        check_like_with_like(records)
    if any(recipe.eval.baseline != "none" for recipe in planned):  # a reused run may predate the switch
        baseline = next(recipe.eval.baseline for recipe in planned if recipe.eval.baseline != "none")
    groups = group_rows(records)
    baselines = group_baselines(groups, baseline)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for index, (budget, rows) in enumerate(groups.items()):
        title = f"## Table {index + 1}" if len(groups) > 1 else "## Comparison"
        linear = baselines.get(budget)
        note = f"\n{_baseline_note(linear, rows)}\n" if linear else ""
        sections.append(f"{title}\n\nBudget, equal for every row: {describe_budget(budget)}.\n\n"
                        f"{markdown_table(rows, linear)}\n{note}{_repeat_note(rows)}")
    note = ("\nThese runs used different data or budgets, so they are shown in separate tables.\n"
            if len(groups) > 1 else "")
    caveat = ("\n`imdb-offline` test = a held-out part of IMDb's train split, not the official IMDb test set.\n"
              if any(b[0] == "imdb-offline" for b in groups) else "")
    applied = f"\nOverrides applied to every recipe: `{' '.join(overrides)}`.\n" if overrides else ""
    markdown = "# peftsent compare\n" + note + applied + "\n" + "\n".join(sections) + caveat
    files = [out_dir / name for name in ("compare.md", "compare.csv", "compare.png")]
    with resource_errors(out_dir, "writing the comparison", cleanup=files):  # a full disk: no partial outputs
        files[0].write_text(markdown)
        write_csv(groups, files[1], baselines)
        plot(groups, files[2], baselines)
    return {"markdown": markdown, "out": out_dir, "groups": groups, "baselines": baselines}


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m peftsent.compare", "Compare recipes side by side on equal budgets.", EPILOG)
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="finished run directories")
    parser.add_argument("--recipes", nargs="+", default=[], metavar="RECIPE", help="recipes to train (or reuse) and compare")
    parser.add_argument("--seeds", type=int, default=1, help="runs per recipe; cells show mean ± std (default: 1)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="key=value",
                        help="overrides applied to every recipe, e.g. --set data.max_train_samples=1000")
    parser.add_argument("--baseline", choices=("none", "tfidf"), default="none",
                        help="tfidf: add a TF-IDF + logistic-regression row fitted on the same training reviews "
                             "(default: none, unless a recipe sets eval.baseline: tfidf)")
    parser.add_argument("--separate", action="store_true",
                        help="runs of different data (fingerprint), label sets or test splits: one table each "
                             "(default: refuse them, exit 2)")
    parser.add_argument("--out", default="runs/compare", help="directory for compare.md, .csv, .png (default: runs/compare)")
    args = parser.parse_args(argv)

    def body() -> int:
        result = compare(args.run_dirs, args.recipes, args.seeds, args.out, args.overrides, args.baseline,
                         args.separate)
        print(result["markdown"])
        print(f"written: {result['out'] / 'compare.md'}, compare.csv, compare.png", file=sys.stderr)
        return 0

    return run_cli(body, "peftsent.compare")


if __name__ == "__main__":
    raise SystemExit(main())
