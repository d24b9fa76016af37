"""The label set is one decision (issue 21): decided from data.labels or the training file, checked against every
split, saved with every model, and followed by every path (metrics, predictions, eval, predict, merge, pipeline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from peftsent.data import load_splits
from peftsent.errors import DataError, RecipeError
from peftsent.recipe import DataSection, resolve_recipe

from conftest import CLASS_NAMES, make_class_reviews, make_reviews, tiny_recipe, write_csv


def _section(path, **kw):
    return DataSection(name=str(path), validation_size=10, test_size=10, **kw)


def label_names(splits):
    """The class names the splits carry (peftsent.data.label_names reads the same ClassLabel): written out so
    the tests of the issue's inputs fail on the old main for the reason they test, not an ImportError."""
    return tuple(splits["train"].features["label"].names)


# ---------------------------------------------------------------- the decision


@pytest.mark.parametrize("keys, expected", [
    (["negative", "Positive"], ("negative", "positive")),
    (["1", "0"], ("negative", "positive")),  # 0/1 stay negative/positive
    (["Neutral", "negative", "positive"], ("negative", "neutral", "positive")),
    (["5", "1", "3", "2", "4"], ("1", "2", "3", "4", "5")),  # integers sorted: 1 is a class, never positive
    (["-1", "1", "0"], ("-1", "0", "1")),
])
def test_inference_rules(keys, expected):
    from peftsent.data import decide_labels

    assert decide_labels(keys) == expected


def test_other_names_need_data_labels():
    from peftsent.data import decide_labels

    for keys in (["pos", "neg", "mixed"], ["1", "negative", "positive"]):  # a mix: 1 of a star file is no positive
        with pytest.raises(DataError, match="data.labels"):
            decide_labels(keys)
    assert decide_labels(["pos", "neg"], given=["neg", "pos"]) == ("neg", "pos")


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_n_class_files_load_with_their_names(n_classes, tmp_path):
    """Fails on the old main for 3 and 5 classes (refused: 'labels outside [0, 1]')."""
    path = write_csv(tmp_path / "d.csv", make_class_reviews(60, n_classes))
    splits = load_splits(_section(path))
    assert label_names(splits) == CLASS_NAMES[n_classes]
    for split in splits.values():
        assert sorted(set(split["label"])) == list(range(n_classes))
    # the class id of each review is the position of its raw label among the names
    rows = dict(make_class_reviews(60, n_classes))
    names = label_names(splits)
    assert all(str(rows[t]) == names[y] for t, y in zip(splits["train"]["text"], splits["train"]["label"]))


def test_one_star_is_never_read_as_positive(tmp_path):
    """Old main: raw 1 in a 1..5 file was silently class 1 = positive, and the suggested map trained every
    one-star review as positive. Now 1 is the class "1"; the old suggestion cannot swallow it silently."""
    path = write_csv(tmp_path / "stars.csv", make_class_reviews(50, 5))
    splits = load_splits(_section(path))
    one_star = [t for t, y in make_class_reviews(50, 5) if y == 1]
    ids = dict(zip(splits["train"]["text"], splits["train"]["label"]))
    assert {ids[t] for t in one_star if t in ids} == {0} and label_names(splits)[0] == "1"
    with pytest.raises(DataError, match="data.labels") as info:
        load_splits(_section(path, label_map={2: "negative", 3: "negative", 4: "positive", 5: "positive"}))
    assert "1: 10 rows" in str(info.value)


def test_label_map_keys_as_yaml_writes_them(tiny_models, tmp_path):
    """Old main: -1 / True keys failed recipe validation (keys had to be quoted strings)."""
    rows = [(t, {0: -1, 1: 0, 2: 1}[i % 3]) for i, (t, _) in enumerate(make_class_reviews(60, 3))]
    path = write_csv(tmp_path / "signed.csv", rows)
    raw = tiny_recipe(tiny_models["bert"], path, tmp_path / "run")
    raw["data"]["label_map"] = {-1: "negative", 0: "neutral", 1: "positive"}
    recipe = resolve_recipe(raw, for_training=False)
    assert label_names(load_splits(recipe.data)) == ("negative", "neutral", "positive")
    booleans = write_csv(tmp_path / "bool.csv", [(t, y == 1) for t, y in make_reviews(40)])
    raw["data"] = {"name": str(booleans), "label_map": {True: "positive", False: "negative"}}
    assert label_names(load_splits(resolve_recipe(raw, for_training=False).data)) == ("negative", "positive")


def test_a_merging_map_is_printed(tmp_path, capsys):
    rows = [(t, "negative" if y == "negative" else ("good" if i % 4 == 1 else "positive"))
            for i, (t, y) in enumerate(make_class_reviews(40, 2))]
    load_splits(_section(write_csv(tmp_path / "m.csv", rows), label_map={"good": "positive"}))
    assert "merges the raw labels good, positive into class 'positive'" in capsys.readouterr().err


def test_missing_labels_are_never_mapped(tiny_models, tmp_path, capsys):
    """Old main: the error suggested data.label_map={nan: negative}, which trained them as negative."""
    rows = make_reviews(40)
    rows[4], rows[9] = (rows[4][0], ""), (rows[9][0], "")
    path = write_csv(tmp_path / "missing.csv", rows)
    with pytest.raises(DataError, match=r"2 rows have no label: rows 4, 9 .*data.drop_missing"):
        load_splits(_section(path))
    raw = tiny_recipe(tiny_models["bert"], path, tmp_path / "run")
    for key in ("nan", float("nan"), ""):
        raw["data"]["label_map"] = {key: "negative"}
        with pytest.raises(RecipeError, match="missing label"):
            resolve_recipe(raw, for_training=False)
    splits = load_splits(_section(path, drop_missing=True))
    assert sum(len(s) for s in splits.values()) == 38
    assert "dropped 2 rows without a label" in capsys.readouterr().err


def test_every_problem_of_a_file_in_one_error(tmp_path):
    """Old main: one kind per error (empty texts, then missing labels, then unknown labels)."""
    rows = make_reviews(40)
    rows[2] = ("   ", 1)  # empty text
    rows[5] = (rows[5][0], "")  # missing label
    rows[7] = (rows[7][0], "mixed")  # not a class of negative/positive
    rows[11] = (rows[1][0], 1 - rows[1][1])  # row 1's text with the other label
    with pytest.raises(DataError) as info:
        load_splits(_section(write_csv(tmp_path / "messy.csv", rows), labels=["negative", "positive"]))
    message = str(info.value)
    assert "4 problems" in message
    for part in ("empty or not text: row 2", "no label: rows 5", "row 7: 'mixed'", "rows 1, 11"):
        assert part in message


def test_every_problem_of_a_file_in_one_error_without_data_labels(tmp_path):
    """Old main: only the empty text was reported, then (after a fix and a rerun) the missing label, then ..."""
    rows = [(t, "positive" if y else "negative") for t, y in make_reviews(40)]
    rows[2] = ("   ", "positive")
    rows[5] = (rows[5][0], "")
    rows[7] = (rows[7][0], "mixed")
    with pytest.raises(DataError) as info:
        load_splits(_section(write_csv(tmp_path / "messy.csv", rows)))
    message = str(info.value)
    assert "3 problems" in message
    for part in ("empty or not text: row 2", "no label: rows 5", "mixed: 1 rows (row 7)", "data.labels"):
        assert part in message


def test_data_labels_are_checked_against_every_split(tiny_models, tmp_path):
    train = write_csv(tmp_path / "train.csv", make_class_reviews(60, 3))
    test = write_csv(tmp_path / "test.csv", [(f"{t} again", "very positive") for t, _ in make_class_reviews(9, 3)])
    with pytest.raises(DataError, match="test.csv: 9 rows have labels that are not among the classes"):
        load_splits(_section(train, test_file=str(test)))
    with pytest.raises(RecipeError, match="given more than once"):
        resolve_recipe({**tiny_recipe(tiny_models["bert"], train, tmp_path / "r"),
                        "data": {"name": str(train), "labels": ["a", "A"]}}, for_training=False)


# ---------------------------------------------------------------- metrics


def test_n_class_metrics_follow_sklearn():
    from sklearn.metrics import f1_score, roc_auc_score

    from peftsent.metrics import classification_metrics

    rng = np.random.default_rng(0)
    labels = np.arange(40) % 5
    logits = rng.normal(size=(40, 5)) + 2 * np.eye(5)[labels] * (rng.random(40) > 0.4)[:, None]
    result = classification_metrics(labels, logits, label_names=["1", "2", "3", "4", "5"])
    preds = logits.argmax(-1)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert result["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert result["weighted_f1"] == pytest.approx(f1_score(labels, preds, average="weighted"))
    assert result["roc_auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert result["mae"] == pytest.approx(np.abs(preds - labels).mean())
    assert result["off_by_one"] == pytest.approx((np.abs(preds - labels) <= 1).mean())
    assert np.array(result["confusion_matrix"]).shape == (5, 5) and sum(map(sum, result["confusion_matrix"])) == 40
    assert list(result["per_class"]) == ["1", "2", "3", "4", "5"]
    assert sum(r["support"] for r in result["per_class"].values()) == 40
    assert "mae" not in classification_metrics(labels % 3, logits[:, :3], label_names=["negative", "neutral", "positive"])
    binary = classification_metrics(labels % 2, logits[:, :2])
    assert set(binary) == {"accuracy", "precision", "recall", "f1", "macro_f1", "roc_auc", "ece", "log_loss",
                           "confusion_matrix", "count"}


def test_beats_the_baseline_only_beyond_the_noise():
    from peftsent.baseline import compare_line

    summary = {"test": {"accuracy": 0.95, "macro_f1": 0.60}, "baseline": {
        "test": {"accuracy": 0.93, "macro_f1": 0.70}, "train_reviews": 100, "fit_seconds": 1.0}}
    gold = [0] * 100
    close = ([0] * 95 + [1] * 5, [0] * 93 + [1] * 7)  # 2 more right: noise
    assert "within the noise" in compare_line(summary, "accuracy", (gold, *close))
    assert "macro_f1 0.6000 vs 0.7000" in compare_line(summary, "macro_f1", (gold, *close))
    apart = ([0] * 95 + [1] * 5, [0] * 60 + [1] * 40)
    summary["baseline"]["test"]["accuracy"] = 0.60
    assert "beats the baseline (McNemar p" in compare_line(summary, "accuracy", (gold, *apart))


# ---------------------------------------------------------------- every path follows the label set

#: (classes, architecture, method): each class count, architecture and method kind at least once
COMBOS = [(3, "distilbert", "lora"), (5, "bert", "bottleneck"), (5, "roberta", "full"), (3, "bert", "prompt_tuning")]


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory):
    from peftsent.train import train

    root = tmp_path_factory.mktemp("label-runs")
    out = {}
    for n_classes, arch, method in COMBOS:
        data = write_csv(root / f"d{n_classes}.csv", make_class_reviews(80, n_classes))
        spec = {"name": method, **({"init_lora_weights": False} if method == "lora" else {})}
        raw = tiny_recipe(tiny_models[arch], data, root / f"{arch}-{method}", spec, learning_rate=1e-2)
        raw["data"].update(validation_size=20, test_size=20)
        out[(n_classes, arch, method)] = train(resolve_recipe(raw))
    return out


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_run_eval_and_predict_follow_the_label_set(combo, runs, tmp_path, capsys):
    from peftsent.eval import evaluate
    from peftsent.loading import load_target
    from peftsent.predict import main as predict_main

    n_classes, names, run = combo[0], CLASS_NAMES[combo[0]], runs[combo]
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["test"]["per_class"]) == list(names)
    assert np.array(metrics["test"]["confusion_matrix"]).shape == (n_classes, n_classes)
    assert ("mae" in metrics["test"]) == (n_classes == 5)
    loaded = load_target(str(run))
    assert loaded.labels == names and loaded.model.config.num_labels == n_classes
    again = evaluate(str(run), out=str(tmp_path / "eval"))
    for key in ("accuracy", "macro_f1", "roc_auc", "log_loss", "ece", "confusion_matrix", "per_class"):
        assert again[key] == (pytest.approx(metrics["test"][key]) if isinstance(again[key], float)
                              else metrics["test"][key])
    prediction = next(iter((run).glob("predictions-*-test.jsonl"))).read_text().splitlines()[0]
    assert list(json.loads(prediction)["probabilities"]) == list(names)
    assert predict_main([str(run), "a great movie", "worst plot"]) == 0
    for line in map(json.loads, capsys.readouterr().out.splitlines()):
        assert list(line["probabilities"]) == list(names) and line["label"] in names
        assert sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("combo", [c for c in COMBOS if c[2] in ("lora", "full")], ids=lambda c: c[2])
def test_merged_and_full_models_name_their_classes_in_a_plain_pipeline(combo, runs):
    from transformers import pipeline

    from peftsent.merge import merge

    run = runs[combo]
    if combo[2] == "full":
        target = run / "model"
    else:
        target, parity = merge(run, probe_size=16)
        assert parity.passed and parity.agreement == 1.0
        assert "labels: `negative`, `neutral`, `positive`" in (target / "README.md").read_text()
    classify = pipeline("text-classification", model=str(target), top_k=None)
    scores = classify(["a great movie", "worst plot ever"])
    for per_text in scores:
        assert sorted(s["label"] for s in per_text) == sorted(CLASS_NAMES[combo[0]])
        assert sum(s["score"] for s in per_text) == pytest.approx(1, abs=1e-5)


def test_adapter_directory_carries_its_labels(runs):
    from peftsent.loading import load_target

    adapter = runs[(5, "bert", "bottleneck")] / "adapter"
    assert json.loads((adapter / "labels.json").read_text())["id2label"]["0"] == "1"
    assert load_target(str(adapter)).labels == CLASS_NAMES[5]


def test_binary_selection_metrics_are_refused_for_more_classes(tiny_models, tmp_path):
    from peftsent.train import train

    data = write_csv(tmp_path / "d3.csv", make_class_reviews(60, 3))
    raw = tiny_recipe(tiny_models["bert"], data, tmp_path / "run", metric_for_best_model="f1")
    with pytest.raises(RecipeError, match="use macro_f1"):
        train(resolve_recipe(raw))


def test_analyze_draws_the_n_by_n_confusion_matrix(runs):
    from peftsent.analyze import main

    run = runs[(3, "distilbert", "lora")]
    assert main([str(run)]) == 0
    out = next((run / "analysis").iterdir())
    text = (out / "analysis.md").read_text()
    assert "| gold \\ predicted | negative | neutral | positive |" in text and (out / "confusion.png").is_file()
    assert "| neutral |" in text.split("## Calibration")[0]  # the per-class rows


def test_out_of_domain_data_of_other_classes_is_refused_before_training(tiny_models, tmp_path, monkeypatch):
    import peftsent.modeling
    from peftsent.train import train

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built although the recipe cannot be scored")

    monkeypatch.setattr(peftsent.modeling, "build_model", no_model)
    data = write_csv(tmp_path / "d3.csv", make_class_reviews(60, 3))
    binary = write_csv(tmp_path / "other.csv", make_reviews(40, seed=3))
    raw = tiny_recipe(tiny_models["bert"], data, tmp_path / "run")
    raw["eval"] = {"also": [str(binary)]}
    with pytest.raises(RecipeError, match="other.csv cannot be scored with this run's classes"):
        train(resolve_recipe(raw))
