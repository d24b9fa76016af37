"""Settings are checked against what they mean (issue 24, item 2): precision, device and optimizer settings this
machine cannot honour are a RecipeError before any compute; the save/eval pairing that load_best_model_at_end needs
is made or explained in the keys the recipe wrote."""

import json

import pytest
import torch
import yaml

from peftsent.errors import RecipeError
from peftsent.recipe import resolve_recipe
from peftsent.rundir import stage_path
from peftsent.train import main

from conftest import tiny_recipe

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="what a machine without a CUDA GPU refuses")


@cpu_only
@pytest.mark.parametrize("key,value,why,fix", [
    ("fp16", True, "needs a CUDA GPU", "train.fp16: false"),
    ("fp16_full_eval", True, "needs a CUDA GPU", "train.fp16_full_eval: false"),
    ("tf32", True, "needs an NVIDIA Ampere or newer GPU", "train.tf32: false"),
    ("use_cpu", False, "this machine has no CUDA GPU", "remove the key"),
    ("optim", "adamw_bnb_8bit", "'adamw_bnb_8bit' cannot run on this machine", "train.optim: adamw_torch"),
])
def test_settings_this_machine_cannot_honour_are_refused_before_any_compute(key, value, why, fix, tiny_models,
                                                                            reviews_csv, tmp_path, capsys):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", **{key: value})
    with pytest.raises(RecipeError) as err:
        resolve_recipe(raw)
    message = str(err.value)
    assert f"train.{key}: " in message and why in message and fix in message, message
    assert "--" not in message.split(f"train.{key}")[1], "transformers' flag wording, not the recipe's keys"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main([str(path)]) == 2
    assert f"train.{key}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not stage_path(tmp_path / "run").exists()


def test_bf16_true_without_bf16_hardware_is_refused_and_auto_is_not(tiny_models, reviews_csv, tmp_path, monkeypatch):
    import peftsent.training_args

    monkeypatch.setattr(peftsent.training_args, "bf16_available", lambda: False)
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", bf16=True)
    with pytest.raises(RecipeError, match="train.bf16: true, but this") as err:
        resolve_recipe(raw)
    assert "train.bf16: auto" in str(err.value)
    raw["train"]["bf16"] = "auto"
    assert resolve_recipe(raw).train["bf16"] == "auto"  # becomes False here when training starts


def test_a_finished_fp16_run_still_loads_for_evaluation_on_a_cpu(tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", fp16=True)
    assert resolve_recipe(raw, for_training=False).train["fp16"] is True


def test_save_strategy_steps_alone_trains_with_evaluations_at_the_checkpoints(tiny_models, reviews_csv, tmp_path):
    """Refused on the old main with transformers' wording about --load_best_model_at_end, a flag the recipe never
    set: the evaluation strategy now follows the save strategy, and eval_steps follows save_steps."""
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", max_steps=4, save_strategy="steps",
                      save_steps=2, metric_for_best_model="log_loss")
    recipe = resolve_recipe(raw)
    assert (recipe.train["eval_strategy"], recipe.train["eval_steps"]) == ("steps", 2)
    from peftsent.train import train

    run = train(recipe)
    state = json.loads((run / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "eval_loss" in e] == [2, 4]
    assert json.loads((run / "metrics.json").read_text())["best_checkpoint"] in ("checkpoint-2", "checkpoint-4")
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["eval_strategy"] == "steps"  # as it ran


@pytest.mark.parametrize("written,followed", [
    ({"eval_strategy": "steps", "eval_steps": 5}, {"save_strategy": "steps", "save_steps": 5}),
    ({"save_strategy": "steps"}, {"eval_strategy": "steps", "eval_steps": 500, "save_steps": 500}),
    ({"save_strategy": "epoch", "eval_strategy": "epoch"}, {}),
    ({"save_strategy": "steps", "load_best_model_at_end": False}, {"eval_strategy": "epoch"}),  # no pairing needed
])
def test_the_unwritten_side_of_the_save_eval_pair_follows_the_written_one(written, followed, tmp_path):
    from peftsent.recipe import _build

    raw = tiny_recipe(tmp_path, tmp_path / "r.csv", tmp_path / "run", **written)
    train = _build(raw, "<dict>").train
    assert {key: train[key] for key in followed} == followed


@pytest.mark.parametrize("written,named", [
    ({"save_strategy": "steps", "eval_strategy": "epoch"}, ["train.save_strategy: steps", "train.eval_strategy: epoch",
                                                            "train.load_best_model_at_end: false"]),
    ({"save_strategy": "steps", "save_steps": 6, "eval_steps": 4}, ["train.save_steps: 6", "train.eval_steps: 4"]),
])
def test_a_save_eval_pair_that_cannot_keep_the_best_checkpoint_is_explained_in_the_recipe_keys(
        written, named, tiny_models, reviews_csv, tmp_path):
    raw = tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", **written)
    with pytest.raises(RecipeError) as err:
        resolve_recipe(raw)
    assert all(name in str(err.value) for name in named), str(err.value)
    assert "--load_best_model_at_end" not in str(err.value)
