import json

import pytest
import torch

from peftsent.errors import RunDirError
from peftsent.loading import load_target
from peftsent.recipe import resolve_recipe
from peftsent.train import train

from conftest import ARCHS, logits_of, tiny_recipe

AWAY_FROM_IDENTITY = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "init_lora_weights": False},
    "ia3": {"name": "ia3", "init_ia3_weights": False},
}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", list(AWAY_FROM_IDENTITY))
def test_one_step_run_writes_the_run_directory(arch, method, tiny_models, reviews_csv, tmp_path):
    recipe = resolve_recipe(tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", AWAY_FROM_IDENTITY[method]))
    run = train(recipe)
    weights = "model" if method == "full" else "adapter"
    assert {p.name for p in run.iterdir()} >= {"recipe.yaml", "metrics.json", weights, "trainer_state.json"}
    assert not list(run.glob("checkpoint-*")) and not list(tmp_path.glob(".run.partial*"))
    assert list((run / weights).glob("*.safetensors"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["sizes"] == {"train": 32, "validation": 16, "test": 16}
    assert metrics["test"]["count"] == 16 and 0 <= metrics["test"]["accuracy"] <= 1
    assert metrics["parameters"]["trainable"] > 0 and metrics["timing"]["train_seconds"] > 0
    config = json.loads((run / weights / "config.json").read_text()) if method == "full" else None
    if config:
        assert config["id2label"] == {"0": "negative", "1": "positive"}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["lora", "ia3", "full"])
def test_reloaded_run_gives_the_same_logits(arch, method, tiny_models, reviews_csv, tmp_path):
    from peftsent.modeling import build_model, load_base_model

    raw = tiny_recipe(tiny_models[arch], reviews_csv, tmp_path / "run", AWAY_FROM_IDENTITY[method], learning_rate=1e-2)
    recipe = resolve_recipe(raw)
    run = train(recipe)
    loaded = load_target(str(run))
    reloaded = logits_of(loaded.model, loaded.tokenizer)
    # the trained weights differ from a fresh build: the comparison below can fail
    fresh, tokenizer, _ = build_model(recipe)
    assert not torch.allclose(logits_of(fresh, tokenizer), reloaded, atol=1e-6)
    # metrics.json (computed in memory after training) == eval of the reloaded run
    from peftsent.eval import evaluate

    result = evaluate(str(run))
    saved = json.loads((run / "metrics.json").read_text())["test"]
    assert result["accuracy"] == saved["accuracy"]
    assert result["log_loss"] == pytest.approx(saved["log_loss"], abs=1e-6)
    if method != "full":
        base = load_base_model(str(tiny_models[arch]))
        assert not torch.allclose(logits_of(base, tokenizer), reloaded, atol=1e-4), "adapter is identity"


def test_existing_run_directory_is_refused(tiny_models, reviews_csv, tmp_path):
    (tmp_path / "run").mkdir()
    recipe = resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run"))
    with pytest.raises(RunDirError, match="--overwrite"):
        train(recipe)


def test_failed_run_leaves_no_directory(tiny_models, tmp_path, monkeypatch):
    from conftest import make_reviews, write_csv

    data = write_csv(tmp_path / "r.csv", make_reviews(64))
    recipe = resolve_recipe(tiny_recipe(tiny_models["bert"], data, tmp_path / "run"))

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("transformers.Trainer.train", explode)
    with pytest.raises(KeyboardInterrupt):
        train(recipe)
    assert not (tmp_path / "run").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]


def test_validation_passes_are_not_counted_as_training_time(tiny_models, reviews_csv, tmp_path, monkeypatch):
    """Two epochs, a validation pass after each: train_seconds excludes them (the Trainer's own eval_runtime).
    Each pass is made to last at least 0.2 s (its metrics wait), so that it survives the 0.1 s rounding."""
    import time

    import peftsent.metrics

    real = peftsent.metrics.trainer_metrics

    def slow_metrics(*args, **kwargs):
        compute = real(*args, **kwargs)

        def slowly(prediction):
            time.sleep(0.2)
            return compute(prediction)

        return slowly

    monkeypatch.setattr(peftsent.metrics, "trainer_metrics", slow_metrics)
    recipe = resolve_recipe(tiny_recipe(tiny_models["bert"], reviews_csv, tmp_path / "run", max_steps=-1,
                                        num_train_epochs=2))
    run = train(recipe)
    timing = json.loads((run / "metrics.json").read_text())["timing"]
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    passes = [e["eval_runtime"] for e in history if "eval_runtime" in e]
    assert len(passes) == 2
    assert timing["validation_seconds"] == pytest.approx(sum(passes), abs=0.05) and timing["validation_seconds"] >= 0.4
    assert timing["train_seconds"] == pytest.approx(timing["train_wall_seconds"] - timing["validation_seconds"], abs=0.15)
    assert 0 < timing["train_seconds"] < timing["train_wall_seconds"]
