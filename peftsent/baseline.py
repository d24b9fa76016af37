"""The classical baseline every comparison carries: TF-IDF features + logistic regression.

Fitted on exactly the training reviews of a recipe's ``data`` section (the same
subset and splits :func:`peftsent.data.load_splits` gives the fine-tune) and
scored on validation and test with :func:`peftsent.metrics.classification_metrics`,
so its row is computed like every other row. A fine-tune that does not beat
it on the same reviews is not worth its compute.

Settings: scikit-learn ``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True,
min_df=2)`` (word unigrams and bigrams, 1 + log(tf), terms seen in at least two
training reviews) and ``LogisticRegression(C, max_iter=1000)`` (L2, lbfgs,
deterministic), with the inverse regularisation strength ``C`` chosen from
``C_GRID`` by validation accuracy, the rule every fine-tune follows (the test
split is only reported; ties go to the smaller C). Its logits are the log-probabilities ``predict_log_proba``
gives, shape (n, 2): softmax of them returns the same probabilities, so ECE and
log loss mean what they mean for a fine-tuned model.
"""

from __future__ import annotations

import time
from typing import Iterable

from peftsent.cli import make_parser, run_cli
from peftsent.data import label_names, load_splits
from peftsent.metrics import classification_metrics, format_table, greater_is_better, mcnemar_p
from peftsent.predictions import data_stem, predictions_name
from peftsent.recipe import load_recipe

#: the value of ``eval.baseline`` (and compare's ``--baseline``) that adds this baseline
NAME = "tfidf"
#: human-readable description, used in tables and messages
DESCRIPTION = "TF-IDF (word 1-2 grams, sublinear tf) + logistic regression"
#: candidate inverse L2 strengths of the logistic regression, chosen by validation accuracy
C_GRID = (1.0, 4.0, 16.0)
#: everything that decides the baseline's numbers; a stored baseline with other settings is recomputed
SETTINGS = {"ngram_range": [1, 2], "sublinear_tf": True, "min_df": 2, "C_grid": list(C_GRID), "max_iter": 1000}


def _vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=tuple(SETTINGS["ngram_range"]), sublinear_tf=SETTINGS["sublinear_tf"],
                           min_df=SETTINGS["min_df"])


def _fit_best_c(features, labels, val_features, val_labels):
    """(model, C): the logistic regression of ``C_GRID`` with the best validation accuracy."""
    from sklearn.linear_model import LogisticRegression

    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=SETTINGS["max_iter"]).fit(features, labels)
        accuracy = model.score(val_features, val_labels)
        if best is None or accuracy > best[0]:
            best = (accuracy, model, c)
    return best[1], best[2]


def tfidf_baseline(splits, ece_bins: int = 15, score: Iterable[str] = ("validation", "test")) -> dict:
    """Fit TF-IDF + logistic regression on ``splits["train"]`` and score the ``score`` splits.

    ``splits``: a mapping of split name -> rows with ``text`` (str) and ``label`` (int class id), such as the
    ``DatasetDict`` of :func:`peftsent.data.load_splits` (any number of classes: a multinomial logistic
    regression). Returns a JSON-ready dict::

        {"name": "tfidf", "description": str, "settings": SETTINGS, "train_reviews": int,
         "features": int,                 # TF-IDF vocabulary size (unigrams + bigrams)
         "C": float,                      # the C of C_GRID chosen on validation
         "fit_seconds": float,            # wall clock: vectorizer + every logistic regression of C_GRID
         "fit_cpu_seconds": float,        # CPU time of this process for the same (robust to a busy machine)
         "seconds": float,                # wall clock: fit + scoring every split in ``score``
         "validation": {metrics}, "test": {metrics},   # classification_metrics of each scored split
         "predicted": {split: [class id, ...]}}         # per review; train keeps it out of metrics.json

    Data loading is not timed (the fine-tune loads the same splits).
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    train, validation = splits["train"], splits["validation"]
    vectorizer = _vectorizer()
    try:
        features = vectorizer.fit_transform(list(train["text"]))
    except ValueError:  # no term in two reviews (a handful of reviews): keep every term
        vectorizer.set_params(min_df=1)
        features = vectorizer.fit_transform(list(train["text"]))
    val_features = vectorizer.transform(list(validation["text"]))
    model, c = _fit_best_c(features, list(train["label"]), val_features, list(validation["label"]))
    fit_seconds, fit_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    result = {"name": NAME, "description": DESCRIPTION, "settings": dict(SETTINGS), "train_reviews": len(train),
              "features": len(vectorizer.vocabulary_), "C": c}
    predicted = {}
    for split in score:
        rows = splits[split]
        scored = val_features if split == "validation" else vectorizer.transform(list(rows["text"]))
        logits = model.predict_log_proba(scored)  # (n, num_labels) log-probabilities, columns in class-id order
        result[split] = classification_metrics(list(rows["label"]), logits, ece_bins, _names(splits))
        predicted[split] = [int(i) for i in logits.argmax(-1)]
    result["fit_seconds"] = round(fit_seconds, 2)
    result["fit_cpu_seconds"] = round(fit_cpu_seconds, 2)
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["predicted"] = predicted
    return result


def _names(splits):
    try:
        return label_names(splits)
    except (AttributeError, StopIteration, TypeError):  # plain mappings of rows: class ids only
        return None


def baseline_for(data_section, ece_bins: int = 15, score: Iterable[str] = ("validation", "test")) -> dict:
    """:func:`tfidf_baseline` on the splits a recipe's ``data`` section (a DataSection) selects.

    Raises DataError as :func:`peftsent.data.load_splits` does.
    """
    return tfidf_baseline(load_splits(data_section), ece_bins, score)


def is_current(stored: dict | None, score: Iterable[str] = ("validation", "test")) -> bool:
    """True if ``stored`` (a run's ``metrics.json["baseline"]``) was computed with today's settings and
    holds every split in ``score``: then it can be shown instead of fitting again."""
    return (isinstance(stored, dict) and stored.get("name") == NAME and stored.get("settings") == SETTINGS
            and all(isinstance(stored.get(split), dict) for split in score))


#: the TF-IDF baseline's predicted class ids per scored split (``{split: [id, ...]}``), kept beside a run's
#: metrics.json so its comparison can be tested review by review
BASELINE_PREDICTIONS = "baseline-predicted.json"


def paired_predictions(run_dir, data_name: str, split: str, baseline_predicted: list | None = None) -> tuple | None:
    """(gold, run predicted, baseline predicted) class ids of ``split``'s reviews: the run's
    ``predictions-<data>-<split>.jsonl`` and ``baseline_predicted`` (default: the run's
    :data:`BASELINE_PREDICTIONS`); None when either is missing or they do not hold the same reviews."""
    import json
    from pathlib import Path

    path = Path(run_dir) / predictions_name(f"{data_stem(data_name)}-{split}")
    sidecar = Path(run_dir) / BASELINE_PREDICTIONS
    if baseline_predicted is None and sidecar.is_file():
        baseline_predicted = json.loads(sidecar.read_text()).get(split)
    if not path.is_file() or baseline_predicted is None:
        return None
    # one record per "\n": str.splitlines would also split at U+2028 and other separators inside a review's text
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    if len(baseline_predicted) != len(rows):
        return None
    return [r["gold"] for r in rows], [r["predicted"] for r in rows], list(baseline_predicted)


def verdict(better: bool, paired: tuple | None) -> tuple[str, float | None]:
    """(``beats`` / ``ahead`` / ``behind``, McNemar p or None): ``beats`` only when ``better`` and McNemar's exact
    test on ``paired`` (gold, ours, theirs: class ids of the same reviews) gives p < :data:`SIGNIFICANCE` with
    more reviews right only for us; ``ahead`` when better without that. The test is on review-level correctness,
    whatever the selection metric."""
    if paired is None:
        return ("ahead" if better else "behind"), None
    import numpy as np

    gold, ours, theirs = (np.asarray(x) for x in paired)
    p = mcnemar_p(ours == gold, theirs == gold)
    more_right = int(((ours == gold) & (theirs != gold)).sum()) > int(((ours != gold) & (theirs == gold)).sum())
    return ("beats" if better and more_right and p < SIGNIFICANCE else "ahead" if better else "behind"), p


#: a difference is called real when McNemar's exact test on the test reviews gives p below this
SIGNIFICANCE = 0.05


def compare_line(summary: dict, metric: str = "accuracy", paired: tuple | None = None) -> str:
    """One line setting a run's selection metric (``metric``: ``train.metric_for_best_model``; accuracy where
    the split lacks it) beside its stored baseline (``summary``: a run's metrics.json).

    Uses the test split when both have it, else validation. ``paired``: (gold, run predicted, baseline
    predicted) class ids of the same reviews of that split; "beats the baseline" is only said when McNemar's
    exact test on them (:func:`peftsent.metrics.mcnemar_p`) gives p < :data:`SIGNIFICANCE`, otherwise the line
    says the difference is within the split's noise (or that no per-review predictions were kept to test it).
    """
    baseline = summary["baseline"]
    split = "test" if "test" in summary and "test" in baseline else "validation"
    metric = str(metric).removeprefix("eval_")
    if summary[split].get(metric) is None or baseline[split].get(metric) is None:
        metric = "accuracy"
    run, linear = summary[split][metric], baseline[split][metric]
    better = run > linear if greater_is_better(metric) else run < linear
    kind, p = verdict(better, paired)
    n = len(paired[0]) if paired is not None else 0
    verdict_text = {
        "beats": f"beats the baseline (McNemar p = {p:.2g} on {n} reviews)" if p is not None else "",
        "ahead": (f"is ahead of the baseline, but within the noise of {n} reviews (McNemar p = {p:.2g})"
                  if p is not None else
                  "is ahead of the baseline (no per-review predictions to test it against the split's noise)"),
        "behind": "does NOT beat the baseline: a linear model is enough at this budget" + (
            f" (McNemar p = {p:.2g} on {n} reviews)" if p is not None else ""),
    }[kind]
    scale = 100 if metric not in ("log_loss", "mae") else 1
    unit = " points" if scale == 100 else ""
    return (f"{split} {metric} {run:.4f} vs {linear:.4f} for {DESCRIPTION} on the same "
            f"{baseline['train_reviews']:,} training reviews (fitted in {baseline['fit_seconds']:.1f} s): "
            f"the fine-tune {verdict_text} ({scale * (run - linear):+.{1 if scale == 100 else 4}f}{unit})")


EPILOG = """examples:
  python -m peftsent.baseline recipes/quick/lora.yaml                                # its 3,000 training reviews
  python -m peftsent.baseline recipes/quick/lora.yaml data.max_train_samples=null    # all 19,904
  python -m peftsent.baseline recipes/quick/lora.yaml data.name=rotten_tomatoes-offline data.max_train_samples=null eval.also=[]

Fits on the training reviews the recipe's data section selects (the same subset and splits as its
fine-tune) and prints validation and test metrics; the recipe's model and method are not used.
"""


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m peftsent.baseline", f"Fit the {DESCRIPTION} baseline on a recipe's data.", EPILOG)
    parser.add_argument("recipe", help="recipe YAML file (its data and eval sections are used)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a recipe key, e.g. data.max_train_samples=null")
    args = parser.parse_intermixed_args(argv)

    def body() -> int:
        recipe = load_recipe(args.recipe, args.overrides)
        result = baseline_for(recipe.data, recipe.eval.ece_bins)
        print(format_table({split: result[split] for split in ("validation", "test")}))
        print(f"\n{DESCRIPTION}: {result['train_reviews']:,} training reviews of {recipe.data.name}, "
              f"{result['features']:,} features, C={result['C']:g} (chosen on validation); fitted in "
              f"{result['fit_seconds']:.1f} s ({result['fit_cpu_seconds']:.1f} s CPU), {result['seconds']:.1f} s "
              f"with scoring")
        return 0

    return run_cli(body, "peftsent.baseline")


if __name__ == "__main__":
    raise SystemExit(main())
