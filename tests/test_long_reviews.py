"""``model.long_reviews: window``: how a run scores reviews longer than its max length is decided once
(the run's TokenPolicy) and every path agrees: train's final evaluation, eval, predict, a merged model and
a copied adapter. Each test fails on e962477, where windows were an eval/predict flag only."""

from __future__ import annotations

import json
import shutil

import pytest

from peftsent.errors import RecipeError
from peftsent.recipe import resolve_recipe

from conftest import ARCHS, tiny_recipe, write_csv
from test_one_truth import long_reviews

METHODS = {"full": {"name": "full"}, "lora": {"name": "lora", "init_lora_weights": False}}
#: each method kind runs one truncation mode: windows must not follow a tail model's truncation side
TRUNCATION = {"full": "tail", "lora": "head+tail"}
#: the default suite runs every architecture and both method kinds; the rest of the matrix is marked slow
DEFAULT_CASES = {("bert", "lora"), ("distilbert", "full"), ("roberta", "lora")}


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("long") / "long.csv", long_reviews(40))


def _window_run(model_dir, data, path, method):
    from peftsent.train import train

    raw = tiny_recipe(model_dir, data, path, METHODS[method], per_device_eval_batch_size=8)
    raw["data"].update(validation_size=8, test_size=8)
    raw["model"].update(truncation=TRUNCATION[method], long_reviews="window", stride=8)
    return train(resolve_recipe(raw))


@pytest.mark.parametrize(("arch", "method"), [
    pytest.param(a, m, marks=() if (a, m) in DEFAULT_CASES else pytest.mark.slow) for a in ARCHS for m in METHODS])
def test_every_path_scores_long_reviews_as_the_run_says(arch, method, tiny_models, long_csv, tmp_path):
    """metrics.json, eval (default), predict, a merged model and a copied adapter all score windows."""
    from peftsent.eval import evaluate
    from peftsent.loading import load_target
    from peftsent.predict import predict_texts
    from peftsent.predictions import read_predictions

    run = _window_run(tiny_models[arch], long_csv, tmp_path / "run", method)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["long_reviews"] == "window" and metrics["inference"]["long_reviews"] == "window (stride 8)"
    assert "validation_truncated" in metrics  # what the best-reload check compares with training's own passes
    served = read_predictions(run / "predictions-long-test.jsonl")
    assert served["truncated"].any()  # the split has reviews longer than max_length

    result = evaluate(str(run))  # the run's own scoring and eval batch size: metrics.json exactly
    assert result["long_reviews"] == "window (stride 8)" and result["written_to"].endswith("long-test.json")
    assert {k: result[k] for k in metrics["test"]} == metrics["test"]

    truncated = evaluate(str(run), long_reviews="truncate")
    assert truncated["long_reviews"] == "truncate" and truncated["written_to"].endswith("long-test-truncate.json")
    cut = read_predictions(truncated["predictions"])
    long_rows = served["truncated"].to_numpy()
    assert (served["logits"][long_rows].tolist() != cut["logits"][long_rows].tolist())  # windows changed them
    short = [v for row in served["logits"][~long_rows] for v in row]  # one window: the same up to padding rounding
    assert short == pytest.approx([v for row in cut["logits"][~long_rows] for v in row], abs=1e-4)

    other = evaluate(str(run), long_reviews="window", stride=4)  # another stride: its own report
    assert other["written_to"].endswith("long-test-window-stride4.json")
    assert json.loads((run / "eval" / "long-test.json").read_text())["long_reviews"] == "window (stride 8)"

    loaded = load_target(str(run))
    predicted = [p["probabilities"]["positive"] for p in predict_texts(loaded, list(served["text"]), 8)]
    assert predicted == pytest.approx(list(served["p_positive"]), abs=2e-6)

    if method == "lora":
        from peftsent.merge import merge

        exported = merge(run, probe_size=8)[0]
        copied = tmp_path / "copied-adapter"
        shutil.copytree(run / "adapter", copied)
        targets = [exported, copied]
    else:
        targets = [run / "model"]
    for target in targets:  # a directory that left its run keeps the mode in its tokenizer config
        policy = load_target(str(target)).policy
        assert (policy.long_reviews, policy.stride) == ("window", 8), target
        again = evaluate(str(target), data=str(long_csv), batch_size=8, out=str(tmp_path / "out"))
        assert again["long_reviews"] == "window (stride 8)"


def test_eval_and_predict_say_how_long_reviews_were_scored(tiny_models, long_csv, tmp_path, capsys):
    from peftsent.eval import main as eval_main
    from peftsent.predict import main as predict_main

    run = _window_run(tiny_models["bert"], long_csv, tmp_path / "run", "lora")
    capsys.readouterr()
    assert eval_main([str(run)]) == 0
    assert "long reviews: window (stride 8)" in capsys.readouterr().out
    assert predict_main([str(run), "a long review " * 20]) == 0
    assert "scored over overlapping windows (stride 8" in capsys.readouterr().err
    assert predict_main([str(run), "a long review " * 20, "--long-reviews", "truncate"]) == 0
    assert "windows" not in capsys.readouterr().err


def test_long_reviews_recipe_keys_are_checked(tiny_models, long_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], long_csv, tmp_path / "r")
    raw["model"]["long_reviews"] = "slide"
    with pytest.raises(RecipeError, match="model.long_reviews: expected one of truncate, window, found 'slide'"):
        resolve_recipe(raw)
    raw["model"].update(long_reviews="truncate", stride=8)
    with pytest.raises(RecipeError, match="model.stride: 8 applies to windows only"):
        resolve_recipe(raw)
    raw["model"].update(long_reviews="window", stride=30)
    with pytest.raises(RecipeError, match=r"model.stride: expected .* \[0, max_length - 3\], found 30"):
        resolve_recipe(raw)
    assert not (tmp_path / "r").exists()


def test_a_stride_the_capped_length_cannot_take_fails_before_weights_load(tiny_models, long_csv, tmp_path,
                                                                         monkeypatch):
    """48 virtual tokens leave 16 of the tiny model's 64 positions: stride 20 passes the recipe's own bound
    (max_length 32) but not the model's; the error names the recipe key, and no weights were loaded."""
    import peftsent.modeling
    from peftsent.train import train

    raw = tiny_recipe(tiny_models["bert"], long_csv, tmp_path / "r", {"name": "prompt_tuning", "num_virtual_tokens": 48})
    raw["model"].update(long_reviews="window", stride=20)
    recipe = resolve_recipe(raw)
    monkeypatch.setattr(peftsent.modeling, "build_model", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(RecipeError, match=r"model.stride: 20: expected tokens of overlap between windows in \[0, 13\] "
                                          r"\(max length 16 less 2 special tokens\); e.g. model.stride: 8"):
        train(recipe)
    assert not (tmp_path / "r").exists()


def test_scoring_policy_overrides(tiny_models):
    from peftsent.tokenization import TokenPolicy

    own = TokenPolicy(32, "head", "window", 8)
    assert own.for_scoring() == own and own.for_scoring("window") == own
    assert own.for_scoring("window", 4).stride == 4
    assert own.for_scoring("truncate") == TokenPolicy(32, "head")
    assert TokenPolicy(32).for_scoring("window").stride is None  # max_length // 2 where windows are made
    with pytest.raises(ValueError, match="--stride 4 applies to windows only"):
        TokenPolicy(32).for_scoring("auto", 4)
    with pytest.raises(ValueError, match="expected auto, truncate, window"):
        own.for_scoring("slide")
