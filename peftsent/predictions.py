"""Per-review predictions: written by every evaluation, read by ``peftsent.analyze``.

One JSON Lines file per (model, dataset, split) scored, one object per review::

    {"index": 17, "gold": 1, "predicted": 0, "p_positive": 0.31,
     "probabilities": {"negative": 0.69, "positive": 0.31}, "logits": [0.42, -0.38],
     "temperature": 1.42, "n_tokens": 611, "truncated": true, "text": "..."}

- ``index``: row of the review in the split as loaded (after any seeded subset)
- ``gold`` / ``predicted``: class ids in the run's label set (``data.labels``; binary: 0 negative, 1 positive)
- ``probabilities``: probability of each class (by name) as served: ``softmax(logits / T)`` when a
  temperature applies (``temperature``), else ``softmax(logits)``; ``p_positive``: the positive class's,
  written for two classes only
- ``logits``: the model's raw logits (before any temperature), so a later fit needs no model
- ``n_tokens``: tokens of the whole review (special tokens included), before truncation;
  ``truncated``: n_tokens > the max length the model saw

Where: a run writes ``<run>/predictions-<data>-<split>.jsonl`` at the end of training (validation,
test and every ``eval.also`` dataset's test); ``peftsent.eval`` writes ``eval/predictions-<report>.jsonl``
beside its ``eval/<report>.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from peftsent.calibration import before_after, fit_temperature, scale, write_calibration
from peftsent.data import label_names as label_names_of
from peftsent.data import load_splits, tokenize_splits
from peftsent.errors import DataError
from peftsent.inference import AGREEMENT_PROBE, predict_checked
from peftsent.metrics import classification_metrics, softmax
from peftsent.modeling import class_names, class_order, to_canonical
from peftsent.recipe import DataSection
from peftsent.rundir import ADAPTER_DIR, MODEL_DIR
from peftsent.speed import run_dtype

COLUMNS = ("index", "gold", "predicted", "logits", "temperature", "n_tokens", "truncated", "text")


def data_stem(name: str) -> str:
    """File-name part of a dataset: its name, a local file's stem, a saved dataset directory's name, or a hub
    id with ``--`` for ``/`` (``cardiffnlp--tweet_eval``)."""
    if Path(name).suffix or Path(name).is_dir():
        return Path(name).stem if Path(name).suffix else Path(name).resolve().name
    return name.replace("/", "--")


def predictions_name(stem: str) -> str:
    """``predictions-<stem>.jsonl``; ``stem`` is e.g. ``imdb-offline-test``."""
    return f"predictions-{stem}.jsonl"


def write_predictions(path: Path, texts, tokenized, logits, temperature: float | None = None,
                      label_names=None) -> Path:
    """Write one JSON line per review. ``texts``: (n,) str; ``tokenized``: the split from
    :func:`peftsent.data.tokenize_splits` (labels, n_tokens, truncated); ``logits``: (n, num_labels) raw, in
    the class order of ``label_names`` (default: the split's, :func:`peftsent.data.label_names`)."""
    logits = np.asarray(logits, dtype=np.float64)
    names = list(label_names or label_names_of(tokenized))
    probs = softmax(scale(logits, temperature))
    columns = {k: tokenized[k] for k in ("labels", "n_tokens", "truncated")}
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            row = {"index": i, "gold": int(columns["labels"][i]), "predicted": int(probs[i].argmax())}
            if len(names) == 2:
                row["p_positive"] = round(float(probs[i, 1]), 6)
            row |= {"probabilities": {n: round(float(p), 6) for n, p in zip(names, probs[i])},
                    "logits": [round(float(v), 6) for v in logits[i]],
                   "temperature": temperature, "n_tokens": int(columns["n_tokens"][i]),
                   "truncated": bool(columns["truncated"][i]), "text": text}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return Path(path)


def read_predictions(path: Path):
    """A ``pandas.DataFrame`` of a predictions file. Raises DataError if it is empty or lacks a column."""
    import pandas as pd

    try:
        frame = pd.read_json(path, lines=True)
    except ValueError as err:
        raise DataError(f"{path} is not a predictions file written by peftsent (JSON Lines): {err}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if len(frame) == 0 or missing:
        raise DataError(f"{path}: expected JSON lines with {', '.join(COLUMNS)}; "
                        f"{'it is empty' if len(frame) == 0 else 'missing: ' + ', '.join(missing)}")
    return frame


def logits_array(frame) -> np.ndarray:
    """Raw logits of a predictions frame: (n, num_labels) float64."""
    return np.asarray(frame["logits"].tolist(), dtype=np.float64)


# ---------------------------------------------------------------- end of training


def _score(model, tokenizer, tokenized, batch_size: int, ece_bins: int, temperature: float | None,
           dtype: str = "float32", inference: dict | None = None, policy=None, texts=None):
    """(raw logits (n, num_labels), labels (n,), reviews/s, metrics as served: see :func:`score_logits`).

    ``dtype``: the run's inference precision (:func:`peftsent.speed.run_dtype`), adapter merged in memory
    where it merges; its agreement with float32 goes into ``inference`` when given. ``policy`` / ``texts``:
    long reviews are scored as ``policy.long_reviews`` says (:func:`peftsent.inference.predict_checked`)."""
    # the float32 agreement probe is only kept for the split that records it (validation): no discarded passes
    logits, labels, speed, report = predict_checked(model, tokenizer, tokenized, batch_size, dtype,
                                                    probe=0 if inference is None else AGREEMENT_PROBE,
                                                    policy=policy, texts=texts)
    if inference is not None:
        inference.update(report)
    logits = to_canonical(logits, class_order(model.config.id2label))  # columns in the run's class order
    names = class_names(model.config.id2label)
    return logits, labels, speed, score_logits(logits, labels, ece_bins, temperature, names)


def final_evaluation(model, tokenizer, recipe, splits, tokenized, policy) -> tuple[dict, dict, object]:
    """The end-of-training evaluation: score validation (and test when ``eval.test``), fit the temperature
    on validation (``eval.calibrate``) and score every ``eval.also`` dataset's test split.

    Returns (results for metrics.json: ``validation``, ``test``, ``calibration``, ``also``; timing:
    ``<split>_samples_per_second``; ``write(work)``, which writes ``predictions-*.jsonl`` and
    ``calibration.json`` into the run's work directory: only the main process calls it). Metrics are as
    served (temperature applied; accuracy is unchanged by it), with the uncalibrated ECE and log-loss kept
    under ``uncalibrated``; ``policy`` is the run's :class:`peftsent.tokenization.TokenPolicy`: with
    ``long_reviews: window`` every split is scored over windows, and ``validation_truncated`` holds the
    validation metrics of the truncated reviews, as training's own validation passes scored them.
    """
    import dataclasses

    batch, bins, dtype = recipe.train["per_device_eval_batch_size"], recipe.eval.ece_bins, run_dtype(recipe)
    names = ("validation", "test") if recipe.eval.test else ("validation",)
    inference: dict = {}  # dtype, merged, agreement with float32 on the validation split's first reviews
    scored = {split: _score(model, tokenizer, tokenized[split], batch, bins, None, dtype,
                            inference if split == "validation" else None, policy, splits[split]["text"])
              for split in names}
    results, timing, temperature = {"inference": inference}, {f"{s}_samples_per_second": scored[s][2] for s in names}, None
    if policy.long_reviews == "window":  # what training's validation passes saw (the best-reload check)
        results["validation_truncated"] = _score(model, tokenizer, tokenized["validation"], batch, bins, None, dtype,
                                                 policy=policy.for_scoring("truncate"))[3]
    files = []  # (file name, texts, tokenized split, raw logits)
    if recipe.eval.calibrate:
        temperature = fit_temperature(*scored["validation"][:2])
        report = {split: before_after(*scored[split][:2], temperature, bins) for split in names}
        fitted_on = f"{recipe.data.name} validation ({len(splits['validation'])} reviews)"
        results["calibration"] = {"temperature": temperature, "fitted_on": fitted_on, **report}
    for split in names:
        logits, labels = scored[split][:2]
        results[split] = score_logits(logits, labels, bins, temperature, recipe.data.labels)
        files.append((predictions_name(f"{data_stem(recipe.data.name)}-{split}"), splits[split]["text"],
                      tokenized[split], logits))
    also = {}
    for name in recipe.eval.also:
        section = dataclasses.replace(DataSection(name=name), max_test_samples=recipe.data.max_test_samples,
                                      sample_seed=recipe.data.sample_seed, labels=recipe.data.labels)
        other = load_splits(section, splits=["test"])
        encoded = tokenize_splits(other, tokenizer, policy)["test"]
        logits, _, _, also[name] = _score(model, tokenizer, encoded, batch, bins, temperature, dtype, None, policy,
                                          other["test"]["text"])
        files.append((predictions_name(f"{data_stem(name)}-test"), other["test"]["text"], encoded, logits))
    if also:
        results["also"] = also

    def write(work: Path) -> None:
        if temperature is not None:  # in the run, and beside the weights so a copied adapter/ or model/ keeps it

            for directory in (work, work / ADAPTER_DIR, work / MODEL_DIR):
                if directory.is_dir():
                    write_calibration(directory, temperature, results["calibration"]["fitted_on"],
                                      {split: results["calibration"][split] for split in names})
        for name, texts, encoded, logits in files:
            write_predictions(work / name, texts, encoded, logits, temperature)

    return results, timing, write


def score_logits(logits, labels, ece_bins: int = 15, temperature: float | None = None, label_names=None) -> dict:
    """Metrics of ``logits / T`` (peftsent.metrics; ``label_names``: the classes of the logits' columns);
    with a temperature, the uncalibrated ECE and log-loss stay under ``uncalibrated`` (accuracy, F1 and
    ROC-AUC do not depend on T)."""
    metrics = classification_metrics(labels, scale(logits, temperature), ece_bins, label_names)
    if temperature is not None:
        raw = classification_metrics(labels, logits, ece_bins)
        metrics["uncalibrated"] = {k: raw[k] for k in ("ece", "log_loss")}
    return metrics
