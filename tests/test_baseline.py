"""The TF-IDF + logistic-regression baseline: fitted on exactly a recipe's training reviews, scored by the
metrics module, stored by train, shown by compare."""

import csv
import json

import numpy as np
import pytest
import yaml

from peftsent.baseline import tfidf_baseline
from peftsent.data import load_splits
from peftsent.errors import RecipeError
from peftsent.metrics import classification_metrics
from peftsent.recipe import resolve_recipe

from conftest import tiny_recipe


def _recipe(tiny_models, reviews_csv, run_dir, data=None, **eval_section):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, run_dir)
    raw["data"].update(data or {})
    raw["eval"] = eval_section
    return resolve_recipe(raw)


@pytest.mark.parametrize("data", [{}, {"max_train_samples": 20, "max_test_samples": 10}], ids=["all", "subset"])
def test_baseline_fits_exactly_the_training_reviews_and_scores_with_the_metrics_module(
        data, tiny_models, reviews_csv, tmp_path, monkeypatch):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    recipe = _recipe(tiny_models, reviews_csv, tmp_path / "run", data)
    splits = load_splits(recipe.data)
    seen = {}
    real_fit = TfidfVectorizer.fit_transform

    def spy(self, texts, *args, **kwargs):
        seen["texts"] = list(texts)
        return real_fit(self, texts, *args, **kwargs)

    monkeypatch.setattr(TfidfVectorizer, "fit_transform", spy)
    result = tfidf_baseline(splits)
    assert seen["texts"] == list(splits["train"]["text"])  # the same subset, in the same order
    assert result["train_reviews"] == len(splits["train"])
    assert result["test"]["count"] == len(splits["test"]) and result["validation"]["count"] == len(splits["validation"])
    # the same numbers as an independent fit with the chosen C, through classification_metrics
    monkeypatch.setattr(TfidfVectorizer, "fit_transform", real_fit)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    features = vectorizer.fit_transform(splits["train"]["text"])
    model = LogisticRegression(C=result["C"], max_iter=1000).fit(features, splits["train"]["label"])
    probs = model.predict_proba(vectorizer.transform(splits["test"]["text"]))
    expected = classification_metrics(splits["test"]["label"], np.log(probs))
    assert result["test"]["accuracy"] == expected["accuracy"]
    assert result["test"]["log_loss"] == pytest.approx(expected["log_loss"], abs=1e-9)
    assert result["seconds"] >= result["fit_seconds"] >= 0


def test_train_stores_the_baseline_of_its_own_splits_and_prints_it(tiny_models, reviews_csv, tmp_path, capsys):
    from peftsent.train import main

    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run")
    raw["data"]["max_train_samples"] = 24
    raw["eval"] = {"baseline": "tfidf"}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    assert main([str(tmp_path / "r.yaml")]) == 0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["baseline"]["train_reviews"] == summary["sizes"]["train"] == 24
    assert summary["baseline"]["test"]["count"] == summary["test"]["count"]
    out = capsys.readouterr().out
    assert f"vs {summary['baseline']['test']['accuracy']:.4f} for TF-IDF" in out and "24 training reviews" in out


def test_unknown_baseline_is_a_recipe_error(tiny_models, reviews_csv, tmp_path):
    with pytest.raises(RecipeError, match=r"eval.baseline: expected one of none, tfidf, found 'tfidff'"):
        _recipe(tiny_models, reviews_csv, tmp_path / "run", baseline="tfidff")


def _write(path, raw):
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_compare_baseline_row_in_table_csv_and_plot(tiny_models, reviews_csv, tmp_path):
    from peftsent.compare import compare

    recipe = _write(tmp_path / "lora.yaml", tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "runs" / "lora"))
    result = compare(recipes=[recipe], out=str(tmp_path / "cmp"), baseline="tfidf")
    # the run itself was trained without eval.baseline: nothing stored, compare fitted it
    assert "baseline" not in json.loads((tmp_path / "runs" / "lora" / "metrics.json").read_text())
    ((budget, baseline),) = result["baselines"].items()
    assert baseline["train_reviews"] == 32  # 64 reviews - 16 test - 16 validation, as the runs trained on
    lines = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert [line["method"] for line in lines] == ["lora", "tfidf-logreg"]
    assert lines[1]["test acc"] == f"{baseline['test']['accuracy']:.4f}"
    assert lines[1]["train s"] == f"{baseline['fit_seconds']:.0f}"
    assert "| baseline: TF-IDF + logistic regression | tfidf-logreg |" in result["markdown"]
    assert "fitted on the same 32 training reviews" in result["markdown"]
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0


def test_recipe_switch_adds_the_row_and_reuses_the_stored_baseline(tiny_models, reviews_csv, tmp_path, monkeypatch):
    from peftsent.compare import compare

    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "runs" / "lora")
    raw["eval"] = {"baseline": "tfidf"}
    path = _write(tmp_path / "lora.yaml", raw)

    def no_refit(*args, **kwargs):
        raise AssertionError("the run's stored baseline was fitted again")

    monkeypatch.setattr("peftsent.baseline.baseline_for", no_refit)
    result = compare(recipes=[path], out=str(tmp_path / "cmp"))  # no --baseline flag: the recipe asks for it
    stored = json.loads((tmp_path / "runs" / "lora" / "metrics.json").read_text())["baseline"]
    assert list(result["baselines"].values()) == [stored]
    assert "tfidf-logreg" in result["markdown"]


def test_a_run_trained_without_the_switch_is_reused_and_gets_the_row(tiny_models, reviews_csv, tmp_path):
    from peftsent.compare import compare

    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "runs" / "lora")
    compare(recipes=[_write(tmp_path / "lora.yaml", raw)], out=str(tmp_path / "a"))
    raw["eval"] = {"baseline": "tfidf"}
    result = compare(recipes=[_write(tmp_path / "lora.yaml", raw)], out=str(tmp_path / "b"))  # no retraining
    assert "baseline" not in json.loads((tmp_path / "runs" / "lora" / "metrics.json").read_text())
    assert len(result["baselines"]) == 1 and "tfidf-logreg" in result["markdown"]
