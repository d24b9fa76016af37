"""Issue 21, items 3, 5 and 6: class weights for imbalanced data, files as people have them (encodings,
byte-order marks), hub datasets with configurations and datasets saved with ``save_to_disk``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_reviews, tiny_recipe, write_csv
from peftsent.errors import RecipeError
from peftsent.recipe import resolve_recipe


def skewed_reviews(n: int, minority: float, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` synthetic reviews (conftest's generator) of which a ``minority`` share is positive."""
    negatives = [r for r in make_reviews(4 * n, seed) if r[1] == 0]
    positives = [r for r in make_reviews(4 * n, seed + 1) if r[1] == 1]
    n_pos = round(n * minority)
    return negatives[:n - n_pos] + positives[:n_pos]


# ---------------------------------------------------------------- class weights


def test_balanced_weights_are_scikit_learns_and_follow_the_class_names():
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    from peftsent.training_args import class_weights

    labels = [0] * 95 + [1] * 5
    weights = class_weights("balanced", labels, ["negative", "positive"])
    assert weights == pytest.approx([100 / (2 * 95), 100 / (2 * 5)])
    three = [0] * 60 + [1] * 30 + [2] * 10
    assert class_weights("balanced", three, ["negative", "neutral", "positive"]) == pytest.approx(
        list(compute_class_weight("balanced", classes=np.arange(3), y=np.array(three))))
    assert np.mean([class_weights("balanced", three, ["a", "b", "c"])[y] for y in three]) == pytest.approx(1.0)
    assert class_weights("none", labels, ["negative", "positive"]) is None
    # a mapping names classes; a class left out weighs 1; YAML may write star names as numbers
    assert class_weights({"neutral": 3}, three, ["negative", "neutral", "positive"]) == [1.0, 3.0, 1.0]
    assert class_weights({5: 2.5}, three, ["1", "5", "9"]) == [1.0, 2.5, 1.0]


def test_unknown_class_name_or_bad_weight_is_one_recipe_error_with_did_you_mean():
    from peftsent.training_args import class_weights

    with pytest.raises(RecipeError) as err:
        class_weights({"positiv": 2, "negative": 0}, [0, 1], ["negative", "positive"])
    message = str(err.value)
    assert "'positiv' is not a class of this run (negative, positive); did you mean 'positive'?" in message
    assert "train.class_weights.negative: expected a weight > 0, found 0" in message
    with pytest.raises(RecipeError, match="balanced needs training reviews of every class; none of neutral"):
        class_weights("balanced", [0, 2, 2], ["negative", "neutral", "positive"])


@pytest.mark.parametrize("value,expected", [
    ("balnced", "did you mean 'balanced'?"),
    ({"negative": -1}, "train.class_weights.negative: expected a weight > 0"),
    ([1, 2], "train.class_weights: expected"),
])
def test_recipe_checks_class_weights_before_anything_loads(value, expected, tmp_path):
    raw = tiny_recipe(tmp_path, tmp_path / "r.csv", tmp_path / "run", class_weights=value)
    with pytest.raises(RecipeError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        resolve_recipe(raw)


def test_recipe_with_data_labels_checks_class_weight_names(tiny_models, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], tmp_path / "r.csv", tmp_path / "run", class_weights={"neutrl": 2})
    raw["data"]["labels"] = ["negative", "neutral", "positive"]
    with pytest.raises(RecipeError, match="did you mean 'neutral'"):
        resolve_recipe(raw)
    raw["train"]["class_weights"] = {"neutral": 2}
    assert resolve_recipe(raw).train["class_weights"] == {"neutral": 2}
    assert resolve_recipe(tiny_recipe(tiny_models["bert"], tmp_path / "r.csv", tmp_path / "run")
                          ).train["class_weights"] == "none"


def test_weighted_loss_is_the_weighted_sum_over_the_reviews_counted_by_the_trainer():
    import torch

    from peftsent.training_args import weighted_loss

    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert weighted_loss([1.0, 1.0, 1.0])({"logits": logits}, labels) == pytest.approx(plain.item())
    per_review = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    w = torch.tensor([0.5, 2.0, 4.0])
    expected = (per_review * w[labels]).sum() / 12  # two accumulated batches of 6 reviews
    assert weighted_loss(w.tolist())({"logits": logits}, labels, num_items_in_batch=12) == pytest.approx(
        expected.item())


@pytest.fixture(scope="module")
def skewed_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("skewed") / "skewed.csv", skewed_reviews(160, 0.10))


def _run(tiny_models, data, run_dir, held_out=40, **train):
    from peftsent.train import train as train_run

    raw = tiny_recipe(tiny_models["bert"], data, run_dir, max_steps=3, learning_rate=0.01, **train)
    raw["data"].update(validation_size=held_out, test_size=held_out)
    return json.loads((train_run(resolve_recipe(raw)) / "metrics.json").read_text())


def test_class_weights_go_through_the_trainers_loss_hook_and_into_metrics_json(tiny_models, skewed_csv,
                                                                               tmp_path, capsys):
    plain = _run(tiny_models, skewed_csv, tmp_path / "none")
    err = capsys.readouterr().err
    assert err.count("peftsent: warning: the smallest class, 'positive', is 10.0% of the 80 training reviews") == 1
    assert "macro-F1" in err and "train.class_weights=balanced" in err
    assert plain["class_weights"] == {"setting": "none", "weights": None}
    # weights of 1 through the hook: the same numbers as the model's own mean cross-entropy
    ones = _run(tiny_models, skewed_csv, tmp_path / "ones", class_weights={"negative": 1, "positive": 1})
    assert ones["test"]["log_loss"] == pytest.approx(plain["test"]["log_loss"], abs=1e-6)
    balanced = _run(tiny_models, skewed_csv, tmp_path / "balanced", class_weights="balanced")
    assert "consider train.class_weights" not in capsys.readouterr().err  # warned, without that advice
    assert balanced["class_weights"] == {"setting": "balanced", "weights": pytest.approx(
        {"negative": 80 / (2 * 72), "positive": 80 / (2 * 8)})}
    assert balanced["test"]["log_loss"] != pytest.approx(plain["test"]["log_loss"], abs=1e-6)


def test_the_small_class_warning_starts_under_20_percent(capsys):
    from peftsent.training_args import warn_small_class

    shares = warn_small_class([0] * 80 + [1] * 20, ["negative", "positive"], "none")
    assert shares == {"negative": 0.8, "positive": 0.2} and capsys.readouterr().err == ""
    warn_small_class([0] * 50 + [1] * 40 + [2] * 10, ["negative", "neutral", "positive"], {"positive": 3})
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'positive', is 10.0% of the 100 training reviews" in err
    assert "macro-F1" in err and "consider" not in err  # the run already weighs its classes


def test_stratified_splits_and_subsets_keep_three_class_proportions():
    import collections

    import numpy as np

    from peftsent.data import _split_off, _subset

    rows, labels = np.arange(300), np.array([0] * 150 + [1] * 90 + [2] * 60)  # row numbers and their class ids
    rest, part = _split_off(rows, labels, 50, seed=0)
    assert collections.Counter(labels[part].tolist()) == {0: 25, 1: 15, 2: 10}
    assert len(rest) == 250 and sorted([*rest, *part]) == list(range(300))
    subset = _subset(rows, labels, 100, seed=0)
    assert collections.Counter(labels[subset].tolist()) == {0: 50, 1: 30, 2: 20}


# ---------------------------------------------------------------- files as people have them


def _accented(n: int = 40) -> list[tuple[str, str]]:
    """Reviews with accented letters (é is byte 0xe9 in latin-1 / cp1252) and labels pos/neg."""
    return [(f"{text} café numéro {i}", "pos" if label else "neg") for i, (text, label) in enumerate(make_reviews(n))]


def _write_text(path, rows, encoding: str, kind: str, bom: bool = False):
    if kind == "csv":
        body = "text,label\n" + "".join(f"{t},{y}\n" for t, y in rows)
    elif kind == "jsonl":
        body = "".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in rows)
    elif kind == "json":
        body = json.dumps([{"text": t, "label": y} for t, y in rows], ensure_ascii=False)
    else:
        body = "".join(f"{t}\n" for t, _ in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode(encoding))
    return path


def _section(path, **keys):
    from peftsent.recipe import DataSection

    return DataSection(name=str(path), validation_size=8, test_size=8,
                       label_map=keys.pop("label_map", {"pos": "positive", "neg": "negative"}), **keys)


def test_a_spreadsheet_export_in_cp1252_names_data_encoding_and_its_likely_encoding(tmp_path):
    from peftsent.data import load_splits
    from peftsent.errors import DataError

    path = _write_text(tmp_path / "export.csv", _accented(), "cp1252", "csv")
    assert b"\xe9" in path.read_bytes()
    with pytest.raises(DataError) as err:
        load_splits(_section(path))
    message = str(err.value)
    assert "export.csv is not utf-8 text: byte 0xe9 at offset" in message and "(line 2)" in message
    assert "set data.encoding=cp1252" in message
    splits = load_splits(_section(path, encoding="cp1252"))
    texts = [*splits["train"]["text"], *splits["validation"]["text"], *splits["test"]["text"]]
    assert len(texts) == 40 and all("café numéro" in t for t in texts)
    latin = load_splits(_section(_write_text(tmp_path / "latin.csv", _accented(), "latin-1", "csv"),
                                 encoding="latin-1"))
    assert sorted(latin["train"]["text"]) == sorted(splits["train"]["text"])


@pytest.mark.parametrize("kind", ["csv", "jsonl", "json"])
def test_a_byte_order_mark_is_accepted(kind, tmp_path):
    """Excel's "CSV UTF-8" and Notepad write EF BB BF first: the header, the first record and its text read
    as without it (before: JSON and JSONL failed unexplained; pandas' CSV reader already skipped it)."""
    from peftsent.data import load_splits

    rows = _accented()
    plain = load_splits(_section(_write_text(tmp_path / f"plain.{kind}", rows, "utf-8", kind)))
    marked = load_splits(_section(_write_text(tmp_path / f"bom.{kind}", rows, "utf-8", kind, bom=True)))
    for split in ("train", "validation", "test"):
        assert marked[split]["text"] == plain[split]["text"] and marked[split]["label"] == plain[split]["label"]
    assert not any(t.startswith("\ufeff") for t in marked["train"]["text"])


def test_predict_reads_text_files_with_a_byte_order_mark_or_another_encoding(tmp_path):
    from peftsent.errors import DataError
    from peftsent.predict import read_inputs

    rows = _accented(5)
    expected = [t for t, _ in rows]
    assert read_inputs(str(_write_text(tmp_path / "bom.txt", rows, "utf-8", "txt", bom=True))).reviews == expected
    assert read_inputs(str(_write_text(tmp_path / "bom.csv", rows, "utf-8", "csv", bom=True))).reviews == expected
    assert read_inputs(str(_write_text(tmp_path / "bom.jsonl", rows, "utf-8", "jsonl", bom=True))).reviews == expected
    latin = _write_text(tmp_path / "latin.csv", rows, "cp1252", "csv")
    with pytest.raises(DataError, match="set --encoding=cp1252"):
        read_inputs(str(latin))
    assert read_inputs(str(latin), encoding="cp1252").reviews == expected
    assert read_inputs(str(_write_text(tmp_path / "latin.txt", rows, "cp1252", "txt")), encoding="cp1252"
                       ).reviews == expected


def test_an_unknown_encoding_is_a_recipe_error(tiny_models, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], tmp_path / "r.csv", tmp_path / "run")
    raw["data"]["encoding"] = "latin-9000"
    with pytest.raises(RecipeError, match="data.encoding: unknown encoding 'latin-9000'"):
        resolve_recipe(raw)


@pytest.fixture(scope="module")
def lora_run(tiny_models, reviews_csv, tmp_path_factory):
    from peftsent.train import train as train_run

    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path_factory.mktemp("runs") / "lora",
                      {"name": "lora", "init_lora_weights": False})
    return train_run(resolve_recipe(raw))


def test_eval_and_analyze_take_the_recipes_data_options_for_a_local_file(lora_run, reviews_csv, tmp_path, capsys):
    import csv

    import yaml

    from peftsent.analyze import analyze
    from peftsent.analyze import main as analyze_main
    from peftsent.errors import DataError
    from peftsent.eval import evaluate
    from peftsent.eval import main as eval_main

    with reviews_csv.open() as handle:
        rows = [(r["text"] + " été", {"0": "neg", "1": "pos"}[r["label"]]) for r in csv.DictReader(handle)]
    export = tmp_path / "export.csv"  # other column names, labels and encoding
    export.write_bytes(("review,stars\n" + "".join(f"{t},{y}\n" for t, y in rows)).encode("cp1252"))
    # the same reviews, written as peftsent reads them by default
    same = write_csv(tmp_path / "same.csv", [(t, int(y == "pos")) for t, y in rows])
    reference = evaluate(str(lora_run), data=str(same), out=str(tmp_path / "ref"))
    with pytest.raises(DataError, match="set data.encoding=cp1252"):
        evaluate(str(lora_run), data=str(export), out=str(tmp_path / "x"))
    options = dict(text_column="review", label_column="stars", encoding="cp1252",
                   label_map="{pos: positive, neg: negative}", labels="negative,positive")
    result = evaluate(str(lora_run), data=str(export), out=str(tmp_path / "a"), **options)
    assert result["count"] == reference["count"] and result["accuracy"] == reference["accuracy"]
    assert result["log_loss"] == pytest.approx(reference["log_loss"], abs=1e-6)
    # a recipe path as the data: its data section
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"name": str(export), "text_column": "review",
                                               "label_column": "stars", "encoding": "cp1252",
                                               "label_map": {"pos": "positive", "neg": "negative"}}}))
    from_recipe = evaluate(str(lora_run), data=str(recipe), out=str(tmp_path / "b"))
    assert from_recipe["accuracy"] == reference["accuracy"] and from_recipe["data"] == str(export)
    # the command lines
    argv = ["--data", str(export), "--text-column", "review", "--label-column", "stars", "--encoding", "cp1252",
            "--label-map", "{pos: positive, neg: negative}", "--labels", "negative,positive"]
    assert eval_main([str(lora_run), *argv, "--out", str(tmp_path / "c")]) == 0
    assert analyze_main([str(lora_run), *argv, "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "analysis.md").is_file()
    summary = analyze(str(lora_run), data=str(recipe), out=str(tmp_path / "e"))["summary"]
    assert next(iter(summary.values()))["metrics"]["accuracy"] == pytest.approx(reference["accuracy"])
    capsys.readouterr()
    assert eval_main([str(lora_run), "--data", str(export), "--label-map", "pos"]) == 2
    err = capsys.readouterr().err
    assert "--label-map: expected a YAML mapping" in err and "Traceback" not in err



# ---------------------------------------------------------------- hub datasets with configurations, saved datasets


ROOT = Path(__file__).resolve().parent.parent
TWEET_NAMES = ["negative", "neutral", "positive"]
SST5_NAMES = ["very negative", "negative", "neutral", "positive", "very positive"]


@pytest.fixture(autouse=False)
def datasets_cache(tmp_path, monkeypatch):
    """datasets' own cache (load_dataset of a local directory writes Arrow files there) in tmp_path."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


def _rows(n: int, classes: int, tag: str = "") -> dict:
    return {"text": [f"{tag}review {i} {'good' if i % classes else 'bad'}" for i in range(n)],
            "label": [i % classes for i in range(n)]}


def _saved_tweet_eval(directory, sizes=(30, 9, 12)):
    """A tiny copy of cardiffnlp/tweet_eval 'sentiment' as save_to_disk writes it: text, label (ClassLabel)."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=TWEET_NAMES)})
    splits = {split: datasets.Dataset.from_dict(_rows(n, 3, f"{split} "), features=features)
              for split, n in zip(("train", "validation", "test"), sizes)}
    datasets.DatasetDict(splits).save_to_disk(str(directory))
    return directory


def _saved_sst5(directory):
    """A tiny copy of SetFit/sst5 as save_to_disk writes it: text, label (int 0-4), label_text (its name)."""
    import datasets

    def part(n, tag):
        rows = _rows(n, 5, tag)
        return datasets.Dataset.from_dict({**rows, "label_text": [SST5_NAMES[y] for y in rows["label"]]})

    datasets.DatasetDict({"train": part(40, "train "), "validation": part(10, "dev "),
                          "test": part(15, "test ")}).save_to_disk(str(directory))
    return directory


def test_tweet_eval_recipe_loads_a_saved_copy_with_its_class_names(tmp_path):
    from peftsent.data import _load_dataset, check_available
    from peftsent.recipe import load_recipe

    saved = _saved_tweet_eval(tmp_path / "tweet_eval")
    recipe = load_recipe(ROOT / "recipes/tweet_eval.yaml", [f"data.name={saved}", "data.config=null"])
    assert recipe.data.labels == TWEET_NAMES and check_available(recipe.data) == []
    frames = _load_dataset(recipe.data)
    assert {split: len(f) for split, f in frames.items()} == {"train": 30, "validation": 9, "test": 12}
    assert frames["train"].raw_labels()[:4] == ["negative", "neutral", "positive", "negative"]
    assert frames["test"].texts()[0] == "test review 0 bad"
    # a saved copy has no configurations: the recipe's own config is refused, with the fix
    kept = load_recipe(ROOT / "recipes/tweet_eval.yaml", [f"data.name={saved}"])
    assert "a dataset saved with save_to_disk has no configurations" in check_available(kept.data)[0]


def test_sst5_recipe_loads_a_saved_copy_by_its_label_text_column(tmp_path):
    from peftsent.data import _load_dataset
    from peftsent.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes/sst5.yaml", [f"data.name={_saved_sst5(tmp_path / 'sst5')}"])
    assert recipe.data.labels == SST5_NAMES and recipe.data.label_column == "label_text"
    frames = _load_dataset(recipe.data)
    assert {split: len(f) for split, f in frames.items()} == {"train": 40, "validation": 10, "test": 15}
    assert set(frames["train"].raw_labels()) == set(SST5_NAMES)
    assert frames["validation"].table.dataset.column_names == ["text", "label"]


@pytest.mark.parametrize("recipe_name,make,names", [("tweet_eval", _saved_tweet_eval, TWEET_NAMES),
                                                    ("sst5", _saved_sst5, SST5_NAMES)])
def test_shipped_n_class_recipes_load_saved_copies_end_to_end(recipe_name, make, names, tmp_path):
    """The whole load_splits path, with the label sets of issue 21 (the labels branch: data.decide_labels)."""
    import peftsent.data

    if not hasattr(peftsent.data, "decide_labels"):
        pytest.skip("needs the label sets of issue 21 (peftsent.data.decide_labels, the labels branch)")
    from peftsent.recipe import load_recipe

    recipe = load_recipe(ROOT / f"recipes/{recipe_name}.yaml", [f"data.name={make(tmp_path / recipe_name)}",
                                                                 "data.config=null"])
    splits = peftsent.data.load_splits(recipe.data)
    assert list(peftsent.data.label_names(splits)) == names
    assert sorted(set(splits["train"]["label"])) == list(range(len(names)))


def test_a_binary_saved_dataset_trains_through_load_splits(tmp_path):
    import datasets

    from peftsent.data import load_splits
    from peftsent.recipe import DataSection

    datasets.DatasetDict({"train": datasets.Dataset.from_dict(_rows(40, 2, "train ")),
                          "test": datasets.Dataset.from_dict(_rows(10, 2, "test "))}).save_to_disk(str(tmp_path / "d"))
    splits = load_splits(DataSection(name=str(tmp_path / "d"), validation_size=8))
    assert {split: len(ds) for split, ds in splits.items()} == {"train": 32, "validation": 8, "test": 10}
    assert sorted(splits["validation"]["label"]) == [0] * 4 + [1] * 4  # carved from train, stratified


def _hub_layout(root):
    """A dataset repository laid out as on the hub, no loading script: one parquet folder per configuration,
    declared in README.md, as cardiffnlp/tweet_eval is (load_dataset(path, config) reads it)."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=TWEET_NAMES)})
    lines = ["---", "configs:"]
    for config in ("sentiment", "emotion"):
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, n in (("train", 24), ("validation", 6), ("test", 9)):
            (root / config).mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_dict(_rows(n, 3, f"{config} {split} "), features=features).to_parquet(
                str(root / config / f"{split}.parquet"))
            lines += [f"  - split: {split}", f"    path: {config}/{split}.parquet"]
    (root / "README.md").write_text("\n".join([*lines, "---", ""]))
    return root


def test_data_config_is_passed_to_load_dataset(tmp_path, datasets_cache):
    import dataclasses

    from peftsent.data import _load_dataset, check_available
    from peftsent.errors import DataError
    from peftsent.recipe import load_recipe

    repo = _hub_layout(tmp_path / "tweet_eval_repo")
    recipe = load_recipe(ROOT / "recipes/tweet_eval.yaml", [f"data.name={repo}"])  # config: sentiment
    assert check_available(recipe.data) == []
    frames = _load_dataset(recipe.data)
    assert {split: len(f) for split, f in frames.items()} == {"train": 24, "validation": 6, "test": 9}
    assert all(t.startswith("sentiment ") for f in frames.values() for t in f.texts())
    other = _load_dataset(dataclasses.replace(recipe.data, config="emotion"))
    assert all(t.startswith("emotion ") for t in other["train"].texts())
    with pytest.raises(DataError, match="configuration 'sentimnt'.*could not be loaded.*sentiment"):
        _load_dataset(dataclasses.replace(recipe.data, config="sentimnt"))


def test_hub_dataset_problems_name_the_key_to_change(tmp_path, monkeypatch):
    from peftsent.data import _load_dataset, check_available
    from peftsent.errors import DataError
    from peftsent.predictions import data_stem
    from peftsent.recipe import DataSection

    saved = _saved_tweet_eval(tmp_path / "tweets")
    with pytest.raises(DataError, match=r"column 'tweet' not found; columns are: text, label; "
                                        r"set data.text_column=<column>"):
        _load_dataset(DataSection(name=str(saved), text_column="tweet"))
    csv_file = write_csv(tmp_path / "r.csv", make_reviews(8))
    assert "a local file has none: remove data.config" in check_available(DataSection(name=str(csv_file),
                                                                                      config="sentiment"))[0]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network, nothing cached: the fix is a saved copy
    from peftsent.hub import hub_reachable

    hub_reachable.cache_clear()
    try:
        problem = check_available(DataSection(name="someone/not-cached-anywhere", config="x"))[0]
    finally:
        hub_reachable.cache_clear()
    assert "neither a directory here nor a hub dataset in the local Hugging Face cache" in problem
    assert "datasets.load_dataset('someone/not-cached-anywhere', 'x').save_to_disk(DIR)" in problem
    assert "a hub dataset id (owner/name" in check_available(DataSection(name="nonsense"))[0]
    assert data_stem("cardiffnlp/tweet_eval") == "cardiffnlp--tweet_eval" and data_stem(str(saved)) == "tweets"
    assert data_stem("imdb-offline") == "imdb-offline" and data_stem("data/reviews.csv") == "reviews"


def test_three_class_run_with_balanced_weights(tiny_models, tmp_path, capsys):
    """Three classes (the label sets of issue 21): the weights follow the run's class names, stratified splits
    keep every class, and the warning names the smallest one."""
    import peftsent.data

    if not hasattr(peftsent.data, "decide_labels"):
        pytest.skip("needs the label sets of issue 21 (peftsent.data.decide_labels, the labels branch)")
    names = ["negative", "neutral", "positive"]
    rows = [(f"{text} {'plot' if i % 10 < 6 else ''}", names[0] if i % 10 < 6 else names[1 + (i % 10 >= 9)])
            for i, (text, _) in enumerate(make_reviews(200))]
    data = write_csv(tmp_path / "three.csv", rows)
    metrics = _run(tiny_models, data, tmp_path / "run", class_weights="balanced")
    counts = {name: sum(1 for _, y in rows if y == name) for name in names}
    assert counts == {"negative": 120, "neutral": 60, "positive": 20}
    train_counts = {"negative": 72, "neutral": 36, "positive": 12}  # 200 less 40 + 40 carved, stratified
    assert metrics["class_weights"]["weights"] == pytest.approx(
        {name: 120 / (3 * n) for name, n in train_counts.items()})
    assert "the smallest class, 'positive', is 10.0% of the 120 training reviews" in capsys.readouterr().err
