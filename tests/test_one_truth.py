"""Issue 8: every path sees the same tokens and the same label order, no silent random weights,
no leaked or one-class splits, adapters that travel. Each test fails on 70defbc."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from peftsent.errors import DataError, ModelError, RecipeError
from peftsent.recipe import resolve_recipe

from conftest import ARCHS, NEGATIVE, POSITIVE, WORDS, make_reviews, tiny_recipe, write_csv

METHODS = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "init_lora_weights": False},
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 8},
    "p_tuning": {"name": "p_tuning", "num_virtual_tokens": 8},
}
#: each method kind also runs one truncation mode, so every mode goes through every path
TRUNCATION = {"full": "head", "lora": "head+tail", "prompt_tuning": "head", "p_tuning": "tail"}
#: the default suite runs these (every method, every architecture); the rest of the method x architecture
#: matrix is marked slow for the time budget: pytest -m "" -k every_path runs all 12
DEFAULT_CASES = {("bert", "full"), ("bert", "lora"), ("bert", "p_tuning"),
                 ("distilbert", "prompt_tuning"), ("roberta", "prompt_tuning")}


def long_reviews(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Reviews of 20-70 words (the tiny tokenizer: about one token per word), half positive."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(WORDS[:16]) for _ in range(rng.randint(20, 70))]
        words.insert(rng.randrange(len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append((f"{i} " + " ".join(words), label))  # the number keeps texts unique
    return rows


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("long") / "long.csv", long_reviews(40))


@pytest.fixture
def encode_log(monkeypatch):
    """Record every TokenPolicy.encode call: text -> list of input_ids seen, per caller. The tokenization cache
    is off: a split that another test tokenized the same way would otherwise be read back, not encoded."""
    from peftsent.tokenization import TokenPolicy

    monkeypatch.setenv("PEFTSENT_CACHE", "off")

    log: dict[str, list] = {}
    real = TokenPolicy.encode

    def spy(self, tokenizer, texts):
        out = real(self, tokenizer, texts)
        for text, ids in zip(texts, out["input_ids"]):
            log.setdefault(text, []).append(tuple(ids))
        return out

    monkeypatch.setattr(TokenPolicy, "encode", spy)
    return log


# ---------------------------------------------------------------- 1. one token policy


@pytest.mark.parametrize(("arch", "method"), [
    pytest.param(a, m, marks=() if (a, m) in DEFAULT_CASES else pytest.mark.slow) for a in ARCHS for m in METHODS])
def test_every_path_sees_the_same_tokens(arch, method, tiny_models, long_csv, tmp_path, encode_log):
    """train, eval, predict and merge's probe feed identical input_ids; eval reproduces metrics.json exactly;
    the saved tokenizer's own settings give the same tokens where a plain tokenizer can express the mode."""
    from transformers import AutoTokenizer

    from peftsent.eval import evaluate
    from peftsent.loading import load_target
    from peftsent.merge import merge
    from peftsent.predict import predict_texts
    from peftsent.train import train

    raw = tiny_recipe(tiny_models[arch], long_csv, tmp_path / "run", METHODS[method], per_device_eval_batch_size=8)
    raw["data"].update(validation_size=8, test_size=8)
    raw["model"]["truncation"] = TRUNCATION[method]
    run = train(resolve_recipe(raw))
    metrics = json.loads((run / "metrics.json").read_text())
    trained = {text: ids[0] for text, ids in encode_log.items()}
    assert trained and max(len(ids) for ids in trained.values()) == 32  # long reviews were cut at max_length
    encode_log.clear()

    result = evaluate(str(run), batch_size=8)
    texts = list(encode_log)
    list(predict_texts(load_target(str(run)), texts))
    if method == "lora":
        merge(run, probe_size=8)
    for text in texts:
        seen = encode_log[text]
        assert len(seen) >= 2 and set(seen) == {trained[text]}, text  # eval, predict (, merge) == train
    assert {k: result[k] for k in metrics["test"]} == metrics["test"]  # exactly, every metric

    saved = AutoTokenizer.from_pretrained(run / ("model" if method == "full" else "adapter"))
    assert saved.model_max_length == 32 and saved.truncation_side == ("left" if method == "p_tuning" else "right")
    if TRUNCATION[method] != "head+tail":
        assert all(tuple(saved(text, truncation=True)["input_ids"]) == ids for text, ids in trained.items())


@pytest.mark.parametrize("arch", ARCHS)
def test_truncation_modes(arch, tiny_models):
    from transformers import AutoTokenizer

    from peftsent.tokenization import TokenPolicy

    tokenizer = AutoTokenizer.from_pretrained(tiny_models[arch])
    text = " ".join(f"{w}" for w in (WORDS * 8)[:300])  # 300 words, 1 token each
    full = tokenizer(text)["input_ids"]
    cls, content, sep = full[:1], full[1:-1], full[-1:]
    for max_length in (32, 200):
        head = TokenPolicy(max_length, "head").encode(tokenizer, [text])
        tail = TokenPolicy(max_length, "tail").encode(tokenizer, [text])
        both = TokenPolicy(max_length, "head+tail").encode(tokenizer, [text])
        budget = max_length - 2
        kept = min(128, -(-budget // 4))
        assert head["input_ids"][0] == tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        assert head["input_ids"][0] == cls + content[:budget] + sep
        assert tail["input_ids"][0] == cls + content[-budget:] + sep
        assert both["input_ids"][0] == cls + content[:kept] + content[-(budget - kept):] + sep
        for encoded in (head, tail, both):
            assert encoded["length"] == [max_length] and encoded["n_tokens"] == [len(full)]
            assert encoded["truncated"] == [True] and len(encoded["attention_mask"][0]) == max_length
        # the saved tokenizer settings reproduce head and tail for a plain transformers user
        left = TokenPolicy(max_length, "tail").configure(AutoTokenizer.from_pretrained(tiny_models[arch]))
        assert left(text, truncation=True)["input_ids"] == tail["input_ids"][0]
    short = TokenPolicy(32, "head+tail").encode(tokenizer, ["a good film"])
    assert short["truncated"] == [False] and short["input_ids"][0] == tokenizer("a good film")["input_ids"]


def test_truncation_is_a_recipe_key(tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "r")
    raw["model"]["truncation"] = "middle"
    with pytest.raises(RecipeError, match="model.truncation: expected one of head, tail, head\\+tail"):
        resolve_recipe(raw)


# ---------------------------------------------------------------- 2. label order by id2label


def _head_rows_swapped(model):
    """Swap the two output rows of the classification head in place."""
    import torch

    last = model.classifier.out_proj if hasattr(model.classifier, "out_proj") else model.classifier
    with torch.no_grad():
        last.weight.copy_(last.weight.flip(0))
        last.bias.copy_(last.bias.flip(0))


@pytest.fixture(scope="module")
def classifiers(tiny_models, tmp_path_factory):
    """Per architecture: the same classifier saved as (negative, positive), swapped, and LABEL_0/1."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = {}
    for arch in ARCHS:
        root = tmp_path_factory.mktemp(f"cls-{arch}")
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(tiny_models[arch])
        model = AutoModelForSequenceClassification.from_pretrained(
            tiny_models[arch], num_labels=2, id2label={0: "negative", 1: "positive"})
        model.save_pretrained(root / "plain")
        model.config.id2label, model.config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
        model.save_pretrained(root / "unnamed")
        _head_rows_swapped(model)
        model.config.id2label, model.config.label2id = {0: "Positive", 1: "NEGATIVE"}, {"Positive": 0, "NEGATIVE": 1}
        model.save_pretrained(root / "swapped")
        for name in ("plain", "unnamed", "swapped"):
            tokenizer.save_pretrained(root / name)
        out[arch] = root
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_swapped_classifiers_score_alike(arch, classifiers, long_csv, tmp_path):
    from peftsent.eval import evaluate
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts

    root = classifiers[arch]
    plain = evaluate(str(root / "plain"), data=str(long_csv), out=str(tmp_path / "a"))
    swapped = evaluate(str(root / "swapped"), data=str(long_csv), out=str(tmp_path / "b"))
    unnamed = evaluate(str(root / "unnamed"), data=str(long_csv), out=str(tmp_path / "c"), label_order="negative,positive")
    for result in (swapped, unnamed):
        assert result["confusion_matrix"] == plain["confusion_matrix"]
        assert result["roc_auc"] == pytest.approx(plain["roc_auc"]) and result["log_loss"] == pytest.approx(plain["log_loss"])
    texts = ["a great movie", "awful and boring plot"]
    labels = [[p["label"] for p in predict_texts(load_target(str(root / name)), texts)] for name in ("plain", "swapped")]
    assert labels[0] == labels[1]


def test_unnamed_or_other_classes_are_refused(classifiers, tiny_models, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from peftsent.eval import evaluate, main
    from peftsent.loading import load_target

    root = classifiers["bert"]
    with pytest.raises(ModelError, match="--label-order negative,positive"):
        load_target(str(root / "unnamed"))
    with pytest.raises(ModelError, match="contradicts"):
        load_target(str(root / "plain"), label_order="positive,negative")
    for id2label in ({0: "bad", 1: "good"}, {0: "negative", 1: "neutral", 2: "positive"}):
        other = tmp_path / f"m{len(id2label)}"
        AutoModelForSequenceClassification.from_pretrained(tiny_models["bert"], id2label=id2label).save_pretrained(other)
        AutoTokenizer.from_pretrained(tiny_models["bert"]).save_pretrained(other)
        # any label set loads, named by id2label; scoring it on data of other classes is refused
        assert load_target(str(other), allow_random_weights=True).labels == tuple(id2label.values())
        with pytest.raises(DataError, match="not among the classes"):
            evaluate(str(other), data=str(write_csv(tmp_path / "d2.csv", make_reviews(40))), out=str(tmp_path / "e"),
                     allow_random_weights=True)
    data = write_csv(tmp_path / "d.csv", make_reviews(40))
    assert main([str(root / "unnamed"), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "--label-order" in capsys.readouterr().err


def test_label_map_accepts_other_label_names(tmp_path):
    from peftsent.data import load_splits
    from peftsent.recipe import DataSection

    rows = [(t, "pos" if y else "neg") for t, y in make_reviews(40)]
    path = write_csv(tmp_path / "posneg.csv", rows)
    with pytest.raises(DataError, match="data.label_map"):
        load_splits(DataSection(name=str(path), validation_size=8, test_size=8))
    splits = load_splits(DataSection(name=str(path), validation_size=8, test_size=8,
                                     label_map={"POS": "positive", "neg": "negative"}))
    assert sorted(set(splits["train"]["label"])) == [0, 1]


# ---------------------------------------------------------------- 3. no silent random weights


def _drop_from_checkpoint(model_dir, prefix: str, target):
    """Copy ``model_dir`` to ``target`` without the tensors whose names start with ``prefix``."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, target)
    tensors = load_file(str(target / "model.safetensors"))
    kept = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
    assert len(kept) < len(tensors)
    save_file(kept, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


#: a weight each architecture's checkpoint may lack (a BertModel saved with add_pooling_layer=False, ...)
DROPPED = {"bert": "pooler.dense", "distilbert": "transformer.layer.1.ffn.lin2", "roberta": "encoder.layer.1.output.dense"}


@pytest.mark.parametrize("arch", ARCHS)
def test_untrained_missing_weights_stop_training(arch, tiny_models, reviews_csv, tmp_path):
    import peftsent.train as train_module

    base = _drop_from_checkpoint(tiny_models[arch], DROPPED[arch], tmp_path / "base")
    head = ["pre_classifier", "classifier"] if arch == "distilbert" else ["classifier"]  # the recipe
    raw = tiny_recipe(base, reviews_csv, tmp_path / "run", {"name": "lora", "modules_to_save": head})
    with pytest.raises(RecipeError, match=rf"{DROPPED[arch]}.*method.modules_to_save=\["):
        train_module.train(resolve_recipe(raw))
    assert not (tmp_path / "run").exists()


def test_full_fine_tuning_trains_the_missing_weights(tiny_models, reviews_csv, tmp_path):
    from peftsent.train import train

    base = _drop_from_checkpoint(tiny_models["bert"], "pooler.dense", tmp_path / "base")
    assert (train(resolve_recipe(tiny_recipe(base, reviews_csv, tmp_path / "run", {"name": "full"}))) / "model").is_dir()


@pytest.mark.parametrize("arch", ARCHS)
def test_random_weights_are_not_scored(arch, tiny_models, reviews_csv, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model

    from peftsent.eval import evaluate, main
    from peftsent.modeling import load_base_model

    # a base model directory: its classification head is initialised at every load
    with pytest.raises(ModelError, match="--allow-random-weights"):
        evaluate(str(tiny_models[arch]), data=str(reviews_csv), out=str(tmp_path / "a"))
    assert main([str(tiny_models[arch]), "--data", str(reviews_csv), "--out", str(tmp_path / "b")]) == 2
    assert "classifier" in capsys.readouterr().err
    assert evaluate(str(tiny_models[arch]), data=str(reviews_csv), out=str(tmp_path / "c"),
                    allow_random_weights=True, label_order="negative,positive")["count"] > 0
    # an adapter whose base lacks a weight that the adapter does not carry either
    base = _drop_from_checkpoint(tiny_models[arch], DROPPED[arch], tmp_path / "base")
    head = ["pre_classifier", "classifier"] if arch == "distilbert" else ["classifier"]
    adapter = get_peft_model(load_base_model(str(base)), LoraConfig(target_modules=["query", "q_lin"], modules_to_save=head))
    adapter.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ModelError, match=DROPPED[arch]):
        evaluate(str(tmp_path / "adapter"), data=str(reviews_csv), out=str(tmp_path / "d"))


# ---------------------------------------------------------------- 6. both classes in every split


def test_one_class_validation_is_refused_before_any_model_loads(tiny_models, tmp_path, monkeypatch, capsys):
    import peftsent.modeling as modeling
    from peftsent.train import main

    rows = [(t, 0) for t, _ in make_reviews(190, seed=3)] + [(t, 1) for t, _ in make_reviews(10, seed=4)]
    train_file = write_csv(tmp_path / "train.csv", rows)
    negatives = write_csv(tmp_path / "val.csv", [(f"{t} again", 0) for t, _ in make_reviews(20, seed=5)])
    raw = tiny_recipe(tiny_models["bert"], train_file, tmp_path / "run", metric_for_best_model="roc_auc")
    raw["data"].update(validation_file=str(negatives))
    (tmp_path / "r.yaml").write_text(json.dumps(raw))
    monkeypatch.setattr(modeling, "build_model", None)  # loading a model would fail the test
    assert main([str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err
    assert "split 'validation' holds one class only (20 negative, 0 positive" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_subsetting_to_one_class_is_refused(reviews_csv):
    from peftsent.data import load_splits
    from peftsent.recipe import DataSection

    with pytest.raises(DataError, match="split 'test' holds one class only.*max_test_samples=1"):
        load_splits(DataSection(name=str(reviews_csv), validation_size=8, test_size=8, max_test_samples=1))


# ---------------------------------------------------------------- 7. no review in two splits


def test_duplicates_are_removed_before_carving(tmp_path):
    from peftsent.data import load_splits
    from peftsent.recipe import DataSection

    rows = make_reviews(60, seed=7)
    assert len({t for t, _ in rows}) == 60
    path = write_csv(tmp_path / "tripled.csv", rows * 3)
    splits = load_splits(DataSection(name=str(path), validation_size=10, test_size=10))
    texts = {split: set(splits[split]["text"]) for split in splits}
    assert sum(len(splits[s]) for s in splits) == 60
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])
    conflicting = rows * 3
    conflicting[61] = (conflicting[61][0], 1 - conflicting[61][1])  # a second copy of review 1, relabelled
    with pytest.raises(DataError, match=r"1 texts appear with two different labels: rows 1, 61, 121"):
        load_splits(DataSection(name=str(write_csv(tmp_path / "c.csv", conflicting)), validation_size=10, test_size=10))


def test_validation_file_sharing_train_reviews_is_refused(tmp_path):
    from peftsent.data import load_splits
    from peftsent.recipe import DataSection

    rows = make_reviews(60, seed=8)
    train_file = write_csv(tmp_path / "train.csv", rows[:50])
    val_file = write_csv(tmp_path / "val.csv", rows[40:60])
    section = DataSection(name=str(train_file), validation_file=str(val_file), test_size=8)
    with pytest.raises(DataError, match=r"10 of 20 validation reviews .* data.allow_overlap=true"):
        load_splits(section)
    section.allow_overlap = True
    assert len(load_splits(section)["validation"]) == 20
    test_file = write_csv(tmp_path / "test.csv", rows[55:60] + make_reviews(10, seed=9))
    apart = DataSection(name=write_csv(tmp_path / "t2.csv", rows[:40]).as_posix(), validation_file=str(val_file),
                        test_file=str(test_file))
    with pytest.raises(DataError, match=r"5 of 15 test reviews .* also in the validation file"):
        load_splits(apart)


# ---------------------------------------------------------------- 9. adapters that travel


def test_adapter_names_its_base_by_hub_id_and_carries_a_card(tiny_models, reviews_csv, tmp_path, monkeypatch):
    import torch

    import peftsent.registry as registry
    from peftsent.loading import load_target
    from peftsent.train import train

    monkeypatch.setattr(registry, "embedded_model_path", lambda: tiny_models["bert"])  # stands in for MiniLM
    monkeypatch.setattr(registry, "_embedded_installed", lambda: True)
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", {"name": "lora", "init_lora_weights": False})
    raw["model"].update(name="minilm-l6", max_length=24, truncation="tail")
    run = train(resolve_recipe(raw))
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    card = (run / "adapter" / "README.md").read_text()
    assert "[More Information Needed]" not in card
    for line in ("base_model: sentence-transformers/all-MiniLM-L6-v2", "library_name: peft",
                 "pipeline_tag: text-classification", "datasets: [", "metrics: [", "PeftModel.from_pretrained"):
        assert line in card
    assert "## Metrics of the run" in card and "accuracy" in card
    copied = shutil.copytree(run / "adapter", tmp_path / "elsewhere" / "adapter")  # no run around it

    def logits(loaded):
        columns = {k: v for k, v in loaded.encode(["a great movie", "awful and boring plot"]).items()
                   if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            return loaded.model(**loaded.tokenizer.pad(columns, return_tensors="pt")).logits

    in_run, alone = load_target(str(run)), load_target(str(copied))
    assert alone.policy == in_run.policy  # the copied adapter's tokenizer settings carry the run's policy
    assert torch.equal(logits(in_run), logits(alone))


def test_a_copied_adapter_keeps_its_truncation_mode_and_records_the_length_used(tiny_models, tmp_path):
    """A head+tail run's adapter copied out of its run scores long reviews as the run does; metrics.json and
    the card record the length every path used (capped), not only the requested one."""
    import shutil

    from conftest import write_csv
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.train import train

    words = "the movie was good but the plot was awful and the acting was not very good at all".split()
    rng = random.Random(0)
    rows = [(" ".join(rng.sample(words * 3, len(words) * 3)) + (" great" if i % 2 else " bad"), i % 2)
            for i in range(48)]
    data = write_csv(tmp_path / "long.csv", rows)
    raw = tiny_recipe(tiny_models["bert"], data, tmp_path / "run",
                      {"name": "prompt_tuning", "num_virtual_tokens": 8})
    raw["model"].update(max_length=60, truncation="head+tail")
    run = train(resolve_recipe(raw))
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["max_length"], metrics["requested_max_length"], metrics["truncation"]) == (56, 60, "head+tail")
    assert "max length 56 tokens" in (run / "adapter" / "README.md").read_text()
    copy = tmp_path / "elsewhere" / "adapter"
    shutil.copytree(run / "adapter", copy)
    inside, outside = load_target(str(run)), load_target(str(copy))
    assert outside.policy == inside.policy
    text = [" ".join(words * 4) + " great"]
    assert next(predict_texts(outside, text)) == next(predict_texts(inside, text))


def test_a_target_modules_regex_that_matches_nothing_is_refused_with_the_symbolic_hint(tiny_models, tmp_path):
    from peftsent.errors import RecipeError
    from peftsent.modeling import check_method_on_meta
    from peftsent.registry import resolve_model

    raw = tiny_recipe(tiny_models["bert"], tmp_path / "r.csv", tmp_path / "run",
                      {"name": "lora", "target_modules": "attn"})
    recipe = resolve_recipe(raw)
    with pytest.raises(RecipeError, match="all-linear"):
        check_method_on_meta(recipe, resolve_model(recipe.model.name))
